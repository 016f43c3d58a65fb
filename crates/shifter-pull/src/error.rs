//! The crate's error, with a coarse [`ErrorKind`] the gateway maps to statuses.

use std::path::PathBuf;

use crate::cache::CacheError;
use crate::convert::ConvertError;
use crate::merge::MergeError;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("the image's layers total {total} bytes compressed, over the site's limit of {max}")]
    TooLarge { total: u64, max: u64 },
    #[error("the image has {count} layers, over the site's limit of {max}")]
    TooManyLayers { count: usize, max: usize },
    #[error("the pull did not finish within {secs} s")]
    Timeout { secs: u64 },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whose fault a failed pull is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such repository, tag or platform.
    NotFound,
    /// The registry failed, refused us, or timed out.
    Registry,
    /// The image content was refused: hostile layers, lying digests, limits.
    Rejected,
    /// Our side: disk, cache, bugs.
    Internal,
}

impl PullError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            PullError::Registry(r) => match r {
                RegistryError::NotFound { .. }
                | RegistryError::NoPlatform { .. }
                | RegistryError::WrongPlatform { .. } => ErrorKind::NotFound,
                RegistryError::DigestMismatch { .. }
                | RegistryError::SizeMismatch { .. }
                | RegistryError::TooLarge { .. }
                | RegistryError::Schema1 { .. }
                | RegistryError::UnsupportedMediaType { .. }
                | RegistryError::Malformed { .. }
                | RegistryError::NotAllowed { .. } => ErrorKind::Rejected,
                RegistryError::Cache(_) | RegistryError::Config { .. } => ErrorKind::Internal,
                _ => ErrorKind::Registry,
            },
            PullError::Convert(ConvertError::Merge(m)) => match m {
                MergeError::Open { .. } | MergeError::NotDownloaded { .. } => ErrorKind::Internal,
                // The writer refuses names and sizes squashfs cannot hold: the
                // image's fault. Its I/O errors are ours (disk full…).
                MergeError::Sink { source, .. } => {
                    match source.downcast_ref::<sqfs_writer::Error>() {
                        Some(sqfs_writer::Error::Io(_)) | None => ErrorKind::Internal,
                        Some(_) => ErrorKind::Rejected,
                    }
                }
                _ => ErrorKind::Rejected,
            },
            PullError::Convert(ConvertError::Writer(w)) => match w {
                sqfs_writer::Error::Io(_) => ErrorKind::Internal,
                _ => ErrorKind::Rejected,
            },
            PullError::TooLarge { .. } | PullError::TooManyLayers { .. } => ErrorKind::Rejected,
            PullError::Timeout { .. } => ErrorKind::Registry,
            PullError::Convert(_)
            | PullError::Cache(_)
            | PullError::Io { .. }
            | PullError::Internal(_) => ErrorKind::Internal,
        }
    }
}
