//! Munge authentication as an axum extractor. Every authenticated request
//! carries `authentication: <munge credential>`; decoding talks to munged over
//! a socket, so it runs on a blocking thread. Credentials are never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use thiserror::Error;

use crate::error::ApiError;
use crate::state::{AppState, SystemState};

pub const HEADER: &str = "authentication";

/// Who munged says signed the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("munge credential expired: create a fresh one for each request")]
    Expired,
    #[error("munge credential replayed: each credential may be used once")]
    Replayed,
    #[error("invalid munge credential: {0}")]
    Invalid(String),
    /// munged is unreachable: our problem, not the caller's.
    #[error("munged unavailable: {0}")]
    Unavailable(String),
}

/// Decodes credentials; the real one is libmunge, tests use fakes.
pub trait CredentialDecoder: Send + Sync {
    fn decode(&self, credential: &str) -> Result<Credential, AuthError>;
}

/// The authenticated caller of a request, with the groups ACLs are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// Primary and supplementary groups.
    pub gids: Vec<u32>,
    pub system: String,
}

impl Caller {
    pub fn require_admin(&self, sys: &SystemState) -> Result<(), ApiError> {
        if sys.admins.contains(&self.uid) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "uid {} is not an administrator of system {}",
                self.uid, sys.name
            )))
        }
    }

    pub fn require_import(&self, sys: &SystemState) -> Result<(), ApiError> {
        if sys.import_users.contains(&self.uid) || sys.admins.contains(&self.uid) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "uid {} may not import images on system {} (ask an administrator to add you to import_users)",
                self.uid, sys.name
            )))
        }
    }

    pub fn is_admin(&self, sys: &SystemState) -> bool {
        sys.admins.contains(&self.uid)
    }
}

/// The caller's groups from the system's user database, falling back to the
/// credential's gid alone for users the gateway host does not know.
pub fn groups_of(uid: u32, gid: u32) -> Vec<u32> {
    let mut gids = vec![gid];
    if let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        if let Ok(name) = std::ffi::CString::new(user.name) {
            if let Ok(list) = nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid)) {
                gids.extend(list.into_iter().map(|g| g.as_raw()));
            }
        }
    }
    gids.sort_unstable();
    gids.dedup();
    gids
}

/// Group lists by (uid, gid), kept for a minute: reading the group database
/// on every request would cost more than the rest of a lookup.
#[derive(Default)]
pub struct GroupCache {
    entries: std::sync::Mutex<HashMap<(u32, u32), CachedGroups>>,
}

/// When the list was read, and the groups.
type CachedGroups = (Instant, Vec<u32>);

const GROUP_TTL: Duration = Duration::from_secs(60);

impl GroupCache {
    pub fn groups(&self, uid: u32, gid: u32) -> Vec<u32> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, gids)) = entries.get(&(uid, gid)) {
            if at.elapsed() < GROUP_TTL {
                return gids.clone();
            }
        }
        let gids = groups_of(uid, gid);
        if entries.len() > 100_000 {
            entries.clear();
        }
        entries.insert((uid, gid), (Instant::now(), gids.clone()));
        gids
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| {
                ApiError::Internal("authenticated route without path parameters".into())
            })?;
        let system = params
            .iter()
            .find(|(k, _)| *k == "system")
            .map(|(_, v)| v.to_owned())
            .ok_or_else(|| ApiError::Internal("authenticated route without {system}".into()))?;
        // An unknown system still authenticates (against the first system's
        // munged) so a bad credential is a 401 whatever the path says.
        let sys = match state.system(&system) {
            Ok(s) => s,
            Err(e) => state.systems.values().next().ok_or(e)?,
        };
        let Some(header) = parts.headers.get(HEADER) else {
            state.metrics.auth_failure("missing");
            return Err(ApiError::Unauthorized(
                "missing authentication header: send a fresh munge credential in `authentication`"
                    .into(),
            ));
        };
        let Ok(credential) = header.to_str().map(|c| c.trim().to_owned()) else {
            state.metrics.auth_failure("invalid");
            return Err(ApiError::Unauthorized(
                "authentication header is not text".into(),
            ));
        };
        let decoder = sys.decoder.clone();
        let st = state.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            decoder.decode(&credential).map(|c| {
                let gids = st.groups.groups(c.uid, c.gid);
                (c, gids)
            })
        })
        .await
        .map_err(ApiError::internal)?;
        match decoded {
            Ok((c, gids)) => {
                tracing::debug!(uid = c.uid, gid = c.gid, "authenticated");
                Ok(Caller {
                    uid: c.uid,
                    gid: c.gid,
                    gids,
                    system: system.clone(),
                })
            }
            Err(AuthError::Unavailable(why)) => {
                tracing::error!(system = %system, error = %why, "cannot decode credentials");
                Err(ApiError::Overloaded(
                    "the gateway cannot reach munged to check credentials; try again later".into(),
                ))
            }
            Err(e) => {
                state.metrics.auth_failure(match e {
                    AuthError::Expired => "expired",
                    AuthError::Replayed => "replayed",
                    _ => "invalid",
                });
                Err(ApiError::Unauthorized(e.to_string()))
            }
        }
    }
}

/// Decodes with libmunge against one munged socket.
pub struct MungeDecoder {
    pub socket: std::path::PathBuf,
}

impl CredentialDecoder for MungeDecoder {
    fn decode(&self, credential: &str) -> Result<Credential, AuthError> {
        crate::munge::decode(&self.socket, credential)
    }
}
