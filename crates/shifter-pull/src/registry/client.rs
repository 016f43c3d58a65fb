//! One repository of one registry, over the Docker Registry v2 / OCI distribution
//! API: manifests with the right `Accept`, blobs streamed to the cache and verified,
//! bearer-token and basic authentication driven by `WWW-Authenticate`, retries with
//! exponential backoff. Redirects (blob storage on another host) are followed by
//! reqwest, which drops `Authorization` when the host changes, each one checked
//! by the [`AddressPolicy`], which also sits in the client's DNS resolver.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::challenge::{self, Challenge};
use super::error::RegistryError;
use super::policy::{AddressPolicy, GuardedResolver};
use crate::cache::{BlobCache, CachedBlob};
use crate::config::{Credentials, RegistryConfig};
use crate::digest::Sha256Digest;

/// Every manifest type we understand; without it registries down-convert to
/// schema1 or refuse OCI indexes.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// Manifests and configs are small; anything bigger is hostile.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The longest `Retry-After` we sit out; the overall pull timeout still applies.
const MAX_RETRY_AFTER_SECS: u64 = 60;

/// How much of an error reply we read, only to log it: enough for a registry's
/// `{"errors":[…]}`, never a whole hostile stream.
const MAX_ERROR_BODY_BYTES: usize = 4 << 10;

/// Builds the HTTP client for one registry's transport settings. `stall` bounds
/// each read, so a registry that goes quiet mid-blob fails that attempt instead of
/// holding the pull until its overall timeout. `policy` decides every address
/// connected to (the resolver) and every redirect.
pub fn http_client(
    registry: &str,
    cfg: &RegistryConfig,
    stall: Duration,
    policy: &AddressPolicy,
) -> Result<reqwest::Client, RegistryError> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("shifter-pull/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(stall)
        .redirect(policy.redirect_policy())
        .dns_resolver(Arc::new(GuardedResolver {
            policy: policy.clone(),
        }))
        // A proxy from the environment would make the connections instead of
        // us, past the resolver's checks: the gateway connects directly.
        .no_proxy();
    if cfg.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    if let Some(ca) = &cfg.ca_file {
        let bad = |why: String| RegistryError::Config {
            registry: registry.to_owned(),
            why,
        };
        let pem = std::fs::read(ca)
            .map_err(|e| bad(format!("cannot read CA file {}: {e}", ca.display())))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("CA file {} is not PEM: {e}", ca.display())))?
        {
            b = b.add_root_certificate(cert);
        }
    }
    b.build().map_err(|e| RegistryError::Config {
        registry: registry.to_owned(),
        why: e.to_string(),
    })
}

/// The API host of a registry as named in references.
fn api_host(registry: &str) -> &str {
    if registry == shifter_api::reference::DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        registry
    }
}

#[derive(Debug, Clone)]
enum Auth {
    Anonymous,
    Basic,
    Bearer(HeaderValue),
}

pub struct RepoClient {
    http: reqwest::Client,
    policy: AddressPolicy,
    base: String,
    registry: String,
    repository: String,
    credentials: Option<Credentials>,
    auth: Mutex<Auth>,
    attempts: u32,
    backoff: Duration,
    /// The read timeout of `http`, named in the error when every attempt stalled.
    stall: Duration,
}

/// A manifest as fetched: its exact bytes (the digest is over them), the media type
/// and the verified digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub digest: Sha256Digest,
}

/// How a [`RepoClient`] retries: `attempts` per request with exponential
/// `backoff`; `stall` is the read timeout its HTTP client was built with
/// ([`http_client`]), named when every attempt stalled.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
    pub stall: Duration,
}

impl RepoClient {
    /// `http` must come from [`http_client`] with the same `policy`.
    pub fn new(
        http: reqwest::Client,
        policy: AddressPolicy,
        registry: &str,
        repository: &str,
        cfg: &RegistryConfig,
        credentials: Option<Credentials>,
        retry: Retry,
    ) -> Self {
        let scheme = if cfg.plain_http { "http" } else { "https" };
        RepoClient {
            http,
            policy,
            base: format!("{scheme}://{}/v2/{repository}", api_host(registry)),
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            credentials: credentials.or_else(|| cfg.credentials.clone()),
            auth: Mutex::new(Auth::Anonymous),
            attempts: retry.attempts.max(1),
            backoff: retry.backoff,
            stall: retry.stall,
        }
    }

    /// Fetches a manifest by tag or digest and verifies it: against the digest when
    /// the reference is one, and against the registry's `Docker-Content-Digest`.
    pub async fn manifest(&self, reference: &str) -> Result<FetchedManifest, RegistryError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let what = || format!("manifest {}/{}:{reference}", self.registry, self.repository);
        let (headers, bytes) = self
            .get_small(&url, Some(MANIFEST_ACCEPT), MAX_MANIFEST_BYTES, &what())
            .await?;
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let header_digest = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let digest = Sha256Digest::of(&bytes);
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_owned())
        } else {
            header_digest.filter(|h| h.starts_with("sha256:"))
        };
        if let Some(expected) = expected {
            if expected != digest.to_string() {
                return Err(RegistryError::DigestMismatch {
                    what: what(),
                    expected,
                    actual: digest.to_string(),
                });
            }
        }
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// A small blob (the image config) in memory, verified.
    pub async fn small_blob(
        &self,
        digest: &Sha256Digest,
        max: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let what = format!("blob {digest}");
        let (_, bytes) = self.get_small(&url, None, max, &what).await?;
        let actual = Sha256Digest::of(&bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// A small body (manifest, config) in memory with the response headers. A body
    /// that breaks off or stalls is fetched again, like a layer.
    async fn get_small(
        &self,
        url: &str,
        accept: Option<&str>,
        max: u64,
        what: &str,
    ) -> Result<(reqwest::header::HeaderMap, Vec<u8>), RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.get(url, accept, what).await?;
            let headers = resp.headers().clone();
            match self.read_capped(resp, url, max, what).await {
                Err(RegistryError::Http { source, .. }) if attempt < self.attempts => {
                    warn!(%url, error = %source, attempt, "download broke off; retrying");
                    tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt - 1)).await;
                }
                Err(RegistryError::Http { source, .. }) if source.is_timeout() => {
                    return Err(RegistryError::Stalled {
                        what: what.to_owned(),
                        stall_secs: self.stall.as_secs(),
                        attempts: attempt,
                    })
                }
                Err(e) => return Err(self.logged(e)),
                Ok(bytes) => return Ok((headers, bytes)),
            }
        }
    }

    /// Streams a layer into the cache, hashing as it goes; the blob becomes visible
    /// in the cache only once its digest and size are right. A transfer that breaks
    /// off is restarted (the registry API has no resumable GET we can rely on).
    pub async fn blob_to_cache(
        &self,
        digest: &Sha256Digest,
        size: u64,
        cache: &BlobCache,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<CachedBlob, RegistryError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let what = format!("layer {digest}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut resp = self.get(&url, None, &what).await?;
            let mut w = cache.writer()?;
            let mut hasher = Sha256::new();
            let mut got: u64 = 0;
            let mut broke = None;
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        got += chunk.len() as u64;
                        if got > size {
                            return Err(RegistryError::SizeMismatch {
                                what,
                                expected: size,
                                actual: got,
                            });
                        }
                        hasher.update(&chunk);
                        // A failing cache disk is not worth retrying the network for.
                        w.write(&chunk)?;
                        progress(chunk.len() as u64);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        broke = Some(e);
                        break;
                    }
                }
            }
            match broke {
                Some(e) if attempt < self.attempts => {
                    warn!(%url, error = %e, attempt, "blob download broke off; retrying");
                    tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt - 1)).await;
                    continue;
                }
                Some(e) if e.is_timeout() => {
                    return Err(RegistryError::Stalled {
                        what,
                        stall_secs: self.stall.as_secs(),
                        attempts: attempt,
                    })
                }
                Some(source) => {
                    return Err(self.logged(RegistryError::Http {
                        registry: self.registry.clone(),
                        url,
                        source,
                    }))
                }
                None => {}
            }
            if got != size {
                return Err(RegistryError::SizeMismatch {
                    what,
                    expected: size,
                    actual: got,
                });
            }
            let actual = Sha256Digest::from_hasher(hasher);
            if &actual != digest {
                return Err(RegistryError::DigestMismatch {
                    what,
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            return Ok(w.commit(digest)?);
        }
    }

    /// GET with authentication and retries. 401 triggers one authentication round
    /// driven by the challenge; 429, 5xx and transport errors are retried.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response, RegistryError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| RegistryError::Malformed {
            what: what.to_owned(),
            why: format!("bad URL: {e}"),
        })?;
        // IP literals never reach the resolver: judged here.
        self.policy
            .check_url(&parsed)
            .map_err(|why| self.refused(why))?;
        let mut authenticated = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self.http.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            match (&*self.auth.lock().await, &self.credentials) {
                (Auth::Bearer(h), _) => req = req.header(AUTHORIZATION, h.clone()),
                (Auth::Basic, Some(c)) => req = req.basic_auth(&c.username, Some(&c.password)),
                _ => {}
            }
            let retry_in = self.backoff * 2u32.saturating_pow(attempt - 1);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e)
                    if attempt < self.attempts
                        && (e.is_connect() || e.is_timeout() || e.is_request()) =>
                {
                    warn!(%url, error = %e, attempt, "registry request failed; retrying");
                    tokio::time::sleep(retry_in).await;
                    continue;
                }
                Err(source) => {
                    return Err(self.logged(RegistryError::Http {
                        registry: self.registry.clone(),
                        url: url.to_owned(),
                        source,
                    }))
                }
            };
            // The resolver already chose the address; this checks that what
            // answered is where the policy let us go, whatever the path.
            if let Some(peer) = resp.remote_addr() {
                self.policy
                    .check_peer(resp.url(), peer)
                    .map_err(|why| self.refused(why))?;
            }
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !authenticated {
                authenticated = true;
                let header = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                self.authenticate(&header).await?;
                continue;
            }
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                && attempt < self.attempts
            {
                // Rate limiters (Docker Hub) say when to come back; honour that,
                // within reason, instead of hammering them on our own schedule.
                let wait = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(retry_in, |secs| {
                        Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS))
                    });
                warn!(%url, %status, attempt, ?wait, "registry busy or failing; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_success() {
                return Ok(resp);
            }
            let message = error_body(resp).await;
            warn!(registry = %self.registry, %url, %status, %message, "registry error reply");
            return Err(match status {
                StatusCode::NOT_FOUND => RegistryError::NotFound {
                    registry: self.registry.clone(),
                    what: what.to_owned(),
                },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    repository: self.repository.clone(),
                    why: if self.credentials.is_some() {
                        "the credentials were refused".to_owned()
                    } else {
                        "log in first with `shifterimg login`".to_owned()
                    },
                },
                _ => RegistryError::Status {
                    registry: self.registry.clone(),
                    what: what.to_owned(),
                    status: status.as_u16(),
                },
            });
        }
    }

    fn refused(&self, why: super::policy::Refusal) -> RegistryError {
        self.logged(RegistryError::Refused {
            registry: self.registry.clone(),
            why,
        })
    }

    /// Logs what the user's message leaves out, once, where it is known.
    fn logged(&self, e: RegistryError) -> RegistryError {
        if let Some(detail) = e.log_detail() {
            warn!(registry = %self.registry, repository = %self.repository, %detail, "registry unreachable or refused");
        }
        e
    }

    async fn authenticate(&self, header: &str) -> Result<(), RegistryError> {
        let unauthorized = |why: String| RegistryError::Unauthorized {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            why,
        };
        let Some(ch) = challenge::parse(header) else {
            return Err(unauthorized(
                "the registry sent no usable WWW-Authenticate challenge".into(),
            ));
        };
        let value = match ch.scheme.as_str() {
            "basic" => {
                if self.credentials.is_none() {
                    return Err(unauthorized(
                        "it needs a login: run `shifterimg login` for this registry".into(),
                    ));
                }
                Auth::Basic
            }
            "bearer" => Auth::Bearer(self.fetch_token(&ch).await?),
            other => {
                return Err(unauthorized(format!(
                    "unsupported authentication scheme {other:?}"
                )))
            }
        };
        *self.auth.lock().await = value;
        Ok(())
    }

    /// The token flow of the distribution spec: GET realm?service=…&scope=…, with
    /// basic credentials if we have them (anonymous tokens otherwise).
    async fn fetch_token(&self, ch: &Challenge) -> Result<HeaderValue, RegistryError> {
        let realm = ch.params.get("realm").cloned().unwrap_or_default();
        let fail = |why: String| RegistryError::Token {
            realm: realm.clone(),
            why,
        };
        if !(realm.starts_with("https://") || realm.starts_with("http://")) {
            return Err(fail("the realm is not an http(s) URL".into()));
        }
        // The registry names the token server: as much input as a redirect.
        let realm_url =
            reqwest::Url::parse(&realm).map_err(|e| fail(format!("bad realm URL: {e}")))?;
        self.policy
            .check_url(&realm_url)
            .map_err(|why| self.refused(why))?;
        // Credentials never leave TLS because a registry said so.
        if realm.starts_with("http://") && self.base.starts_with("https://") {
            return Err(fail(
                "an HTTPS registry points to a plain-HTTP token server; refusing to send credentials there".into(),
            ));
        }
        let scope = format!("repository:{}:pull", self.repository);
        let mut query: Vec<(&str, &str)> = vec![("scope", &scope)];
        if let Some(s) = ch.params.get("service") {
            query.push(("service", s));
        }
        let mut req = self.http.get(&realm).query(&query);
        if let Some(c) = &self.credentials {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        debug!(%realm, %scope, "fetching registry token");
        let resp = req.send().await.map_err(|source| {
            self.logged(RegistryError::Http {
                registry: self.registry.clone(),
                url: realm.clone(),
                source,
            })
        })?;
        if let Some(peer) = resp.remote_addr() {
            self.policy
                .check_peer(resp.url(), peer)
                .map_err(|why| self.refused(why))?;
        }
        let status = resp.status();
        if !status.is_success() {
            let msg = error_body(resp).await;
            warn!(registry = %self.registry, %realm, %status, message = %msg, "token server error reply");
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    repository: self.repository.clone(),
                    why: "the token server refused the credentials".into(),
                });
            }
            return Err(fail(format!("it answered {status}")));
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = self
            .read_capped(resp, &realm, 1 << 20, "token reply")
            .await
            .map_err(|e| self.logged(e))?;
        let reply: TokenReply =
            serde_json::from_slice(&body).map_err(|e| fail(format!("bad JSON: {e}")))?;
        let token = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("the reply has no token".into()))?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| fail("the token is not a valid header value".into()))?;
        // Keeps the token out of debug output and HTTP/2 header compression tables.
        value.set_sensitive(true);
        Ok(value)
    }
}

impl RepoClient {
    /// Reads a whole body, refusing more than `max` bytes (a lying Content-Length
    /// or an endless stream cannot make us buffer more).
    async fn read_capped(
        &self,
        mut resp: Response,
        url: &str,
        max: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        if resp.content_length().is_some_and(|l| l > max) {
            return Err(RegistryError::TooLarge {
                what: what.to_owned(),
                max,
            });
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|source| RegistryError::Http {
            registry: self.registry.clone(),
            url: url.to_owned(),
            source,
        })? {
            if (out.len() + chunk.len()) as u64 > max {
                return Err(RegistryError::TooLarge {
                    what: what.to_owned(),
                    max,
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// The error text of a reply (`{"errors":[{"message":…}]}`), short and
/// printable, for the log only. At most [`MAX_ERROR_BODY_BYTES`] are read.
async fn error_body(mut resp: Response) -> String {
    let status = resp.status();
    let mut body = Vec::new();
    while body.len() < MAX_ERROR_BODY_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    body.truncate(MAX_ERROR_BODY_BYTES);
    let v: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let msg = v
        .as_ref()
        .and_then(|v| {
            v.get("errors")?
                .get(0)?
                .get("message")?
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned()
        });
    if msg.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        msg.chars().filter(|c| !c.is_control()).take(300).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::Router;

    use super::*;

    /// The policy of a site that configured the test server at `addr` (on
    /// loopback) as an internal registry.
    fn local_policy(addr: &str) -> AddressPolicy {
        AddressPolicy::new([super::super::policy::authority(addr, false)])
    }

    /// Answers 503 to the first `fail` requests, then `body` as a manifest.
    #[derive(Clone)]
    struct Flaky {
        hits: Arc<AtomicUsize>,
        fail: usize,
        body: Arc<Vec<u8>>,
    }

    async fn flaky(State(s): State<Flaky>) -> axum::response::Response {
        if s.hits.fetch_add(1, Ordering::SeqCst) < s.fail {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"errors":[{"message":"try later"}]}"#,
            )
                .into_response();
        }
        (
            [("content-type", super::super::manifest::OCI_MANIFEST)],
            s.body.as_ref().clone(),
        )
            .into_response()
    }

    async fn client_for(s: Flaky) -> RepoClient {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            axum::serve(listener, Router::new().fallback(flaky).with_state(s)).await
        });
        let cfg = RegistryConfig {
            plain_http: true,
            internal: true,
            ..Default::default()
        };
        let policy = local_policy(&addr);
        RepoClient::new(
            http_client(&addr, &cfg, Duration::from_secs(120), &policy).unwrap(),
            policy,
            &addr,
            "repo",
            &cfg,
            None,
            Retry {
                attempts: 3,
                backoff: Duration::from_millis(10),
                stall: Duration::from_secs(120),
            },
        )
    }

    fn flaky_state(fail: usize, body: Vec<u8>) -> Flaky {
        Flaky {
            hits: Arc::new(AtomicUsize::new(0)),
            fail,
            body: Arc::new(body),
        }
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_the_registry_answers() {
        let s = flaky_state(2, b"{}".to_vec());
        let c = client_for(s.clone()).await;
        let m = c.manifest("latest").await.expect("third attempt succeeds");
        assert_eq!(m.bytes, b"{}");
        assert_eq!(m.digest, Sha256Digest::of(b"{}"));
        assert_eq!(s.hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn rate_limited_requests_wait_as_long_as_the_registry_asks() {
        async fn limited(State(hits): State<Arc<AtomicUsize>>) -> axum::response::Response {
            if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "1")],
                    "slow down",
                )
                    .into_response();
            }
            (
                [("content-type", super::super::manifest::OCI_MANIFEST)],
                "{}",
            )
                .into_response()
        }
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = Router::new()
            .fallback(limited)
            .with_state(Arc::clone(&hits));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg = RegistryConfig {
            plain_http: true,
            internal: true,
            ..Default::default()
        };
        let policy = local_policy(&addr);
        let c = RepoClient::new(
            http_client(&addr, &cfg, Duration::from_secs(120), &policy).unwrap(),
            policy,
            &addr,
            "repo",
            &cfg,
            None,
            Retry {
                attempts: 3,
                backoff: Duration::from_millis(1),
                stall: Duration::from_secs(120),
            },
        );
        let start = std::time::Instant::now();
        c.manifest("latest").await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(900),
            "waited {:?}",
            start.elapsed()
        );
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_registry_that_keeps_failing_is_given_up_on_without_repeating_its_reply() {
        let s = flaky_state(100, Vec::new());
        let c = client_for(s.clone()).await;
        let e = c.manifest("latest").await.unwrap_err();
        assert!(
            matches!(e, RegistryError::Status { status: 503, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("answered 503"), "{e}");
        assert!(
            !e.to_string().contains("try later"),
            "the body is logged only: {e}"
        );
        assert_eq!(
            s.hits.load(Ordering::SeqCst),
            3,
            "exactly the configured attempts"
        );
    }

    #[tokio::test]
    async fn manifest_fetched_by_digest_must_match_it() {
        let c = client_for(flaky_state(0, b"{\"a\":1}".to_vec())).await;
        let wrong = Sha256Digest::of(b"other");
        let e = c.manifest(&wrong.to_string()).await.unwrap_err();
        assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    }

    #[tokio::test]
    async fn oversized_manifest_is_refused() {
        let c = client_for(flaky_state(
            0,
            vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize],
        ))
        .await;
        assert!(matches!(
            c.manifest("latest").await,
            Err(RegistryError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn blob_longer_than_its_descriptor_never_enters_the_cache() {
        let body = vec![7u8; 4096];
        let c = client_for(flaky_state(0, body.clone())).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 1 << 30).unwrap();
        let d = Sha256Digest::of(&body);
        let e = c.blob_to_cache(&d, 100, &cache, &|_| {}).await.unwrap_err();
        assert!(
            matches!(e, RegistryError::SizeMismatch { expected: 100, .. }),
            "{e}"
        );
        assert!(cache.lookup(&d, None).unwrap().is_none());
        let ok = c.blob_to_cache(&d, 4096, &cache, &|_| {}).await.unwrap();
        assert_eq!(ok.size, 4096);
    }

    /// A registry that announces `body`, sends half of it and then goes quiet with
    /// the connection open, for the first `stalls` requests; later ones get it all.
    /// Returns its address and the count of requests it saw.
    async fn stalling_registry(body: Vec<u8>, stalls: usize) -> (String, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => head.extend_from_slice(&buf[..k]),
                        }
                    }
                    let hdr = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = sock.write_all(hdr.as_bytes()).await;
                    if n < stalls {
                        let _ = sock.write_all(&body[..body.len() / 2]).await;
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    } else {
                        let _ = sock.write_all(&body).await;
                    }
                });
            }
        });
        (addr, hits)
    }

    fn stall_client(addr: &str, attempts: u32) -> RepoClient {
        let cfg = RegistryConfig {
            plain_http: true,
            internal: true,
            ..Default::default()
        };
        let policy = local_policy(addr);
        let stall = Duration::from_millis(300);
        RepoClient::new(
            http_client(addr, &cfg, stall, &policy).unwrap(),
            policy,
            addr,
            "repo",
            &cfg,
            None,
            Retry {
                attempts,
                backoff: Duration::from_millis(10),
                stall,
            },
        )
    }

    #[tokio::test]
    async fn a_blob_that_stalls_every_time_is_retried_then_fails_saying_it_stalled() {
        let body = vec![3u8; 64 << 10];
        let (addr, hits) = stalling_registry(body.clone(), usize::MAX).await;
        let c = stall_client(&addr, 3);
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 1 << 30).unwrap();
        let d = Sha256Digest::of(&body);
        let start = std::time::Instant::now();
        let e = c
            .blob_to_cache(&d, body.len() as u64, &cache, &|_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e, RegistryError::Stalled { attempts: 3, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("stopped arriving"), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), 3, "one request per attempt");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "each attempt gave up after the stall timeout"
        );
        assert!(cache.lookup(&d, None).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_blob_that_stalls_once_arrives_on_the_retry() {
        let body = vec![5u8; 64 << 10];
        let (addr, hits) = stalling_registry(body.clone(), 1).await;
        let c = stall_client(&addr, 3);
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 1 << 30).unwrap();
        let d = Sha256Digest::of(&body);
        let ok = c
            .blob_to_cache(&d, body.len() as u64, &cache, &|_| {})
            .await
            .unwrap();
        assert_eq!(ok.size, body.len() as u64);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_config_that_stalls_once_arrives_on_the_retry_and_one_that_always_stalls_fails() {
        let body = vec![b'{'; 8 << 10];
        let d = Sha256Digest::of(&body);
        let (addr, hits) = stalling_registry(body.clone(), 1).await;
        let got = stall_client(&addr, 3)
            .small_blob(&d, 1 << 20)
            .await
            .unwrap();
        assert_eq!(got, body);
        assert_eq!(hits.load(Ordering::SeqCst), 2);

        let (addr, hits) = stalling_registry(body, usize::MAX).await;
        let e = stall_client(&addr, 2)
            .small_blob(&d, 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(e, RegistryError::Stalled { attempts: 2, .. }),
            "{e:?}"
        );
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    /// Serves `app` on a fresh loopback port.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        addr
    }

    fn client_with(addr: &str, policy: AddressPolicy) -> RepoClient {
        let cfg = RegistryConfig {
            plain_http: true,
            ..Default::default()
        };
        RepoClient::new(
            http_client(addr, &cfg, Duration::from_secs(5), &policy).unwrap(),
            policy,
            addr,
            "repo",
            &cfg,
            None,
            Retry {
                attempts: 2,
                backoff: Duration::from_millis(1),
                stall: Duration::from_secs(5),
            },
        )
    }

    #[tokio::test]
    async fn a_redirect_to_an_internal_service_is_refused_alike_for_open_and_closed_ports() {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&hits);
        let secret = serve(Router::new().fallback(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { "internal secret: redis_version:7.0" }
        }))
        .await;
        let mut said = Vec::new();
        for target in [secret.clone(), closed_port()] {
            let to = format!("http://{target}/");
            let registry = serve(Router::new().fallback(move || {
                let to = to.clone();
                async move { axum::response::Redirect::temporary(&to) }
            }))
            .await;
            // The registry itself is vouched for; where it redirects is not.
            let c = client_with(&registry, local_policy(&registry));
            let e = c.manifest("latest").await.unwrap_err();
            let msg = e.to_string().replace(&registry, "REGISTRY");
            assert!(!msg.contains("secret") && !msg.contains(&target), "{msg}");
            said.push(msg);
        }
        assert_eq!(
            said[0], said[1],
            "one message for an open and a closed port"
        );
        assert_eq!(said[0], "registry REGISTRY unreachable or refused");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "the internal service was never asked"
        );
    }

    #[tokio::test]
    async fn an_ip_literal_registry_not_configured_internal_is_never_connected_to() {
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&hits);
        let open = serve(Router::new().fallback(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { "SSH-2.0-OpenSSH_9.2" }
        }))
        .await;
        let mut said = Vec::new();
        for addr in [open, closed_port()] {
            let e = client_with(&addr, AddressPolicy::default())
                .manifest("latest")
                .await
                .unwrap_err();
            assert!(matches!(e, RegistryError::Refused { .. }), "{e:?}");
            said.push(e.to_string().replace(&addr, "ADDR"));
        }
        assert_eq!(said[0], said[1]);
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_by_the_resolver() {
        let registry = serve(Router::new().fallback(|| async { "{}" })).await;
        let port = registry.rsplit_once(':').unwrap().1;
        let name = format!("localhost:{port}");
        let e = client_with(&name, AddressPolicy::default())
            .manifest("latest")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("registry {name} unreachable or refused")
        );
        assert!(
            e.log_detail().is_some_and(|d| d.contains("loopback")),
            "the log says why: {:?}",
            e.log_detail()
        );
    }

    #[tokio::test]
    async fn an_endless_error_body_is_read_only_up_to_the_cap() {
        let endless = Router::new().fallback(|| async {
            let chunk = bytes_of(64 << 10);
            let stream =
                futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            (
                StatusCode::IM_A_TEAPOT,
                axum::body::Body::from_stream(stream),
            )
        });
        let addr = serve(endless).await;
        let c = client_with(&addr, local_policy(&addr));
        let e = tokio::time::timeout(Duration::from_secs(10), c.manifest("latest"))
            .await
            .expect("an endless body does not hold the request")
            .unwrap_err();
        assert!(
            matches!(e, RegistryError::Status { status: 418, .. }),
            "{e}"
        );
    }

    fn bytes_of(n: usize) -> axum::body::Bytes {
        axum::body::Bytes::from(vec![b'x'; n])
    }
}
