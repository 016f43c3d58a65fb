//! Registry failures, worded for the user who asked for the pull.
//!
//! What a registry or a host it redirects to says is never repeated to the user:
//! no error body, no transport detail. Otherwise a pull becomes a probe of the
//! gateway's network ("connection refused" against "invalid HTTP response"
//! tells a closed port from an open one) and a way to read internal services'
//! replies. Transport failures and refused addresses therefore all read
//! "registry X unreachable or refused"; the detail goes to the gateway's log.

use super::policy::Refusal;

/// The one message for every way of not getting an HTTP answer.
const UNREACHABLE: &str = "unreachable or refused";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connection, TLS, DNS, redirect or body-transfer failure. `url` and
    /// `source` are for the log (see [`RegistryError::log_detail`]).
    #[error("registry {registry} {UNREACHABLE}")]
    Http {
        registry: String,
        url: String,
        source: reqwest::Error,
    },
    /// The address policy refused a URL or an address before or after
    /// connecting; same message as [`RegistryError::Http`], on purpose.
    #[error("registry {registry} {UNREACHABLE}")]
    Refused { registry: String, why: Refusal },
    #[error("registry {registry} is not one this site pulls from: ask the gateway's administrators to add it to [registries] in imagegw.toml")]
    NotAllowed { registry: String },
    #[error("{what} stopped arriving: the registry sent nothing for {stall_secs} s, {attempts} times in a row; it is stalled or overloaded, try again later")]
    Stalled {
        what: String,
        stall_secs: u64,
        attempts: u32,
    },
    /// An HTTP error status; the body is logged, never shown.
    #[error("registry {registry} answered {status} for {what}")]
    Status {
        registry: String,
        what: String,
        status: u16,
    },
    #[error("{what} not found in registry {registry}")]
    NotFound { registry: String, what: String },
    #[error("registry {registry} refused access to {repository}: {why}")]
    Unauthorized {
        registry: String,
        repository: String,
        why: String,
    },
    #[error("token server {realm} failed: {why}")]
    Token { realm: String, why: String },
    #[error("{what} does not match its digest: expected {expected}, got {actual}; the registry or a proxy is serving wrong content")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what} is larger than {max} bytes")]
    TooLarge { what: String, max: u64 },
    #[error("{what} has {actual} bytes but its descriptor says {expected}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{reference} is a Docker schema 1 manifest, which is deprecated and not supported; push the image again with a current Docker or skopeo")]
    Schema1 { reference: String },
    #[error("{what} has media type {media_type:?}, which is not a container image")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("{reference} has no image for platform {wanted}; it offers: {available}")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("{reference} is built for {actual}, but this system needs {wanted}")]
    WrongPlatform {
        reference: String,
        wanted: String,
        actual: String,
    },
    #[error("malformed {what}: {why}")]
    Malformed { what: String, why: String },
    #[error("bad registry settings for {registry}: {why}")]
    Config { registry: String, why: String },
    #[error("blob cache: {0}")]
    Cache(#[from] crate::cache::CacheError),
}

impl RegistryError {
    /// What the log says beyond the user's message: the URL and the transport
    /// error with its causes ("invalid peer certificate: UnknownIssuer",
    /// "connection refused"), or why the policy refused.
    pub fn log_detail(&self) -> Option<String> {
        match self {
            RegistryError::Http { url, source, .. } => Some(format!("{url}: {}", chain(source))),
            RegistryError::Refused { why, .. } => Some(why.to_string()),
            _ => None,
        }
    }
}

/// An error with its causes.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        cur = c.source();
    }
    s
}
