//! Registry failures, worded for the user who asked for the pull. URLs never carry
//! credentials, so they are safe to show.

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach {url}: {}", chain(.source))]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what} stopped arriving: the registry sent nothing for {stall_secs} s, {attempts} times in a row; it is stalled or overloaded, try again later")]
    Stalled {
        what: String,
        stall_secs: u64,
        attempts: u32,
    },
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
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

/// An error with its causes, which for transport errors hold the part a user can act
/// on ("invalid peer certificate: UnknownIssuer", "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
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
