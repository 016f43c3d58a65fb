//! Munge authentication as an axum extractor. Every authenticated request
//! carries `authentication: <munge credential>`; decoding talks to munged over
//! a socket, so it runs on a blocking thread. The credential's payload must
//! name the gateway and this very request (`shifter_api::credential`): the
//! [`bind_body`] layer, on every authenticated route, hashes the body for the
//! extractor to compare. Credentials are never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use shifter_api::credential::{self, PayloadError};
use thiserror::Error;

use crate::error::ApiError;
use crate::state::{AppState, SystemState};

pub const HEADER: &str = "authentication";

/// Who munged says signed the credential, and what they wrote into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub uid: u32,
    pub gid: u32,
    /// The payload; for the gateway, [`credential::PURPOSE`] and the request.
    pub payload: Vec<u8>,
}

/// Bodies of authenticated requests are read whole (to hash them) up to this
/// size; every such body is a small JSON document.
pub const MAX_BODY: usize = 1 << 20;

/// The sha256 (hex) of the request body, put by [`bind_body`] for the
/// extractor. Its absence on an authenticated route is a wiring bug, and the
/// request is refused.
#[derive(Debug, Clone)]
pub struct BodyDigest(pub String);

/// Reads the body (at most [`MAX_BODY`]), records its sha256 and hands the
/// same bytes on to the handler. A request without a credential is passed on
/// unread, to be refused by the extractor: nobody unauthenticated makes the
/// gateway buffer anything.
pub async fn bind_body(req: Request, next: Next) -> Result<Response, ApiError> {
    if !req.headers().contains_key(HEADER) {
        return Ok(next.run(req).await);
    }
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::BadRequest(format!(
            "request body unreadable or larger than {MAX_BODY} bytes"
        ))
    })?;
    parts
        .extensions
        .insert(BodyDigest(credential::body_sha256(&bytes)));
    Ok(next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await)
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
    /// A genuine credential whose payload is not this request's: made for
    /// another service (no payload, or another one) or another request.
    #[error("{0}")]
    NotForThisRequest(PayloadError),
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
        // Routes without {system} (`/openapi.json`) authenticate against the
        // first system's munged, as an unknown system does, so a bad
        // credential is a 401 whatever the path says.
        let system = match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params
                .iter()
                .find(|(k, _)| *k == "system")
                .map(|(_, v)| v.to_owned())
                .unwrap_or_default(),
            Err(_) => String::new(),
        };
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
        let body_sha256 = parts
            .extensions
            .get::<BodyDigest>()
            .map(|d| d.0.clone())
            .ok_or_else(|| {
                ApiError::Internal("authenticated route without the bind_body layer".into())
            })?;
        // The request target exactly as received: what the client signed.
        let target = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.path().to_owned());
        let method = parts.method.as_str().to_owned();
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
        let decoded = decoded.and_then(|(c, gids)| {
            credential::verify_payload(&c.payload, &method, &target, &body_sha256).map_err(
                |why| {
                    // Who tried is worth knowing; the credential never is.
                    tracing::info!(uid = c.uid, reason = %why, "credential refused: not for this request");
                    AuthError::NotForThisRequest(why)
                },
            )?;
            Ok((c, gids))
        });
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
                    AuthError::NotForThisRequest(_) => "unbound",
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
