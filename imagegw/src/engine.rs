//! The pull pipeline as the gateway sees it: give it a reference and a staging
//! directory inside the image directory, get back a squashfs and its metadata.
//! The real engine is `shifter-pull`; tests use a fake.

use std::path::{Path, PathBuf};

use shifter_api::record::PullProgress;
use shifter_api::{DockerRef, ImageMeta, Platform};
use thiserror::Error;

/// Everything the engine needs to know about one pull.
#[derive(Debug, Clone)]
pub struct PullSpec {
    pub reference: DockerRef,
    pub platform: Platform,
    pub keep_setuid: bool,
    pub compression: String,
    /// The requesting user's `shifterimg login` for this registry, if any.
    pub credentials: Option<Credentials>,
}

/// Registry credentials; Debug output hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ username: {:?}, password: <hidden> }}",
            self.username
        )
    }
}

/// The stages the engine reports; TRANSFER (publishing) belongs to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Pulling,
    Conversion,
}

/// Where the engine reports progress; called from the engine's (blocking) thread.
pub trait ProgressSink: Send + Sync {
    fn stage(&self, stage: Stage);
    fn bytes(&self, progress: PullProgress);
}

/// A finished conversion: the squashfs (inside the staging directory) and its meta.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub meta: ImageMeta,
    pub squashfs: PathBuf,
}

/// Why a pull failed, sorted by whose fault it is. Messages are shown to users,
/// so they say what happened and what to do, and never carry credentials.
#[derive(Debug, Clone, Error)]
pub enum EngineError {
    /// The registry does not have this repository, tag or platform.
    #[error("{0}")]
    NotFound(String),
    /// The registry failed or refused us (network, auth, 5xx).
    #[error("{0}")]
    Registry(String),
    /// The image content was refused (hostile layers, bad digests, size caps).
    #[error("{0}")]
    Rejected(String),
    /// Our side failed (disk full, converter bug).
    #[error("{0}")]
    Internal(String),
}

pub trait PullEngine: Send + Sync {
    /// The image id `spec.reference` resolves to now (manifest requests only),
    /// so a re-pull of an unchanged tag can skip download and conversion.
    /// Engines that cannot tell cheaply return None.
    fn resolve(&self, _spec: &PullSpec) -> Result<Option<String>, EngineError> {
        Ok(None)
    }

    /// Pulls and converts `spec.reference`, writing only inside `staging`.
    /// Blocking: the gateway calls it on a blocking thread.
    fn pull(
        &self,
        spec: &PullSpec,
        staging: &Path,
        progress: &dyn ProgressSink,
    ) -> Result<Pulled, EngineError>;
}

/// Used until a real engine is configured: every pull fails with a clear message.
pub struct NoEngine;

impl PullEngine for NoEngine {
    fn pull(&self, _: &PullSpec, _: &Path, _: &dyn ProgressSink) -> Result<Pulled, EngineError> {
        Err(EngineError::Internal(
            "this gateway was built without a pull engine".into(),
        ))
    }
}
