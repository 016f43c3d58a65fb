//! The gateway operations, each one request tried against the gateways in order.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use shifter_api::{ApiErrorBody, ImageList, ImageRecord, ImageRef, ImageType, PullRequest};

use crate::auth::{Authenticator, MungeAuth};
use crate::error::{ClientError, GatewayFailure};
use crate::transport::{self, Attempt};

/// How [`Client::pull_and_wait`] polls.
#[derive(Debug, Clone, Copy)]
pub struct PollOptions {
    /// Pause between two status requests.
    pub interval: Duration,
    /// Give up after this long; `None` waits for a final status.
    pub max_wait: Option<Duration>,
}

impl Default for PollOptions {
    fn default() -> Self {
        PollOptions {
            interval: Duration::from_secs(1),
            max_wait: None,
        }
    }
}

/// A client for one system (platform) of a set of equivalent gateways.
pub struct Client {
    gateways: Vec<String>,
    system: String,
    timeout: Duration,
    auth: Box<dyn Authenticator>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("gateways", &self.gateways)
            .field("system", &self.system)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client signing requests with the local munged (`munge_socket`, or
    /// libmunge's default), each credential decodable only by `gateway_uid`
    /// (not even by root) when it is given: every caller passes the site's
    /// `gateway_uid`/`gateway_user` here. `timeout` bounds each request to
    /// each gateway.
    pub fn new(
        gateways: Vec<String>,
        system: impl Into<String>,
        timeout: Duration,
        munge_socket: Option<PathBuf>,
        gateway_uid: Option<u32>,
    ) -> Result<Self, ClientError> {
        Self::with_authenticator(
            gateways,
            system,
            timeout,
            Box::new(MungeAuth {
                socket: munge_socket,
                gateway_uid,
            }),
        )
    }

    /// A client with another credential source (tests, other auth schemes).
    pub fn with_authenticator(
        gateways: Vec<String>,
        system: impl Into<String>,
        timeout: Duration,
        auth: Box<dyn Authenticator>,
    ) -> Result<Self, ClientError> {
        if gateways.is_empty() {
            return Err(ClientError::NoGateways);
        }
        let gateways = gateways
            .into_iter()
            .map(|g| normalise_gateway(&g))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            gateways,
            system: system.into(),
            timeout,
            auth,
            agent: transport::agent(timeout),
        })
    }

    pub fn gateways(&self) -> &[String] {
        &self.gateways
    }

    pub fn system(&self) -> &str {
        &self.system
    }

    /// The READY image a reference names. `NotFound` when unknown or not ready.
    pub fn lookup(&self, image: &ImageRef) -> Result<ImageRecord, ClientError> {
        self.request("GET", &self.image_path("lookup", image), None)
    }

    /// Starts (or joins) a pull and returns its current record.
    pub fn pull(&self, image: &ImageRef, req: &PullRequest) -> Result<ImageRecord, ClientError> {
        let body = serde_json::to_value(req).expect("PullRequest serialises");
        self.request("POST", &self.image_path("pull", image), Some(&body))
    }

    /// Pulls and polls until the status is final (READY, FAILURE, EXPIRED),
    /// calling `on_update` with every record seen. A FAILURE is returned as a
    /// record, not an error: its `status_message` is for the user.
    pub fn pull_and_wait(
        &self,
        image: &ImageRef,
        req: &PullRequest,
        poll: &PollOptions,
        mut on_update: impl FnMut(&ImageRecord),
    ) -> Result<ImageRecord, ClientError> {
        let start = Instant::now();
        loop {
            // Re-posting joins the running job, as Shifter's client does; the
            // lookup endpoint would hide the job until it is READY.
            let rec = self.pull(image, req)?;
            on_update(&rec);
            if rec.status.is_final() {
                return Ok(rec);
            }
            if let Some(max) = poll.max_wait {
                if start.elapsed() >= max {
                    return Err(ClientError::PullTimedOut {
                        image: image.to_string(),
                        status: rec.status,
                        waited: max,
                    });
                }
            }
            std::thread::sleep(poll.interval);
        }
    }

    /// READY images of this system the caller may use.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ClientError> {
        let path = format!("/api/list/{}/", enc(&self.system));
        self.request::<ImageList>("GET", &path, None)
            .map(|l| l.list)
    }

    /// Publishes a site-built squashfs as `custom:<name>`. The gateway reads
    /// `path` as the caller, so it must be absolute and readable by them.
    pub fn import(&self, path: &Path, name: &str) -> Result<ImageRecord, ClientError> {
        let image = ImageRef::from_parts(ImageType::Custom, name)
            .map_err(|e| ClientError::InvalidArgument(format!("cannot import as {name:?}: {e}")))?;
        if !path.is_absolute() {
            return Err(ClientError::InvalidArgument(format!(
                "import path {} must be absolute",
                path.display()
            )));
        }
        let filepath = path.to_str().ok_or_else(|| {
            ClientError::InvalidArgument(format!("import path {} is not UTF-8", path.display()))
        })?;
        let body = json!({ "filepath": filepath, "format": "squashfs" });
        self.request("POST", &self.image_path("doimport", &image), Some(&body))
    }

    /// Removes an image (admins). Returns the gateway's reply.
    pub fn expire(&self, image: &ImageRef) -> Result<Value, ClientError> {
        self.request("GET", &self.image_path("expire", image), None)
    }

    /// Removes every image unused past the expiry time (admins).
    pub fn autoexpire(&self) -> Result<Value, ClientError> {
        let path = format!("/api/autoexpire/{}/", enc(&self.system));
        self.request("GET", &path, None)
    }

    /// Stores registry credentials for the caller. The gateway endpoint is
    /// `POST /api/login/{system}/` with `{"registry","username","password"}`;
    /// a gateway without it answers 404.
    pub fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
    ) -> Result<Value, ClientError> {
        let path = format!("/api/login/{}/", enc(&self.system));
        let body = json!({ "registry": registry, "username": username, "password": password });
        self.request("POST", &path, Some(&body))
    }

    fn image_path(&self, op: &str, image: &ImageRef) -> String {
        format!("/api/{op}/{}/{}/", enc(&self.system), image.url_path())
    }

    fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        // Serialised once: the bytes sent are the bytes the credential binds.
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON values serialise"));
        let mut tried = Vec::new();
        for gw in &self.gateways {
            let url = format!("{gw}{path}");
            // A fresh credential per gateway: each decode consumes it.
            let credential =
                self.auth
                    .credential(method, path, body.as_deref().unwrap_or_default())?;
            let sent = body.as_deref();
            match transport::send(&self.agent, method, &url, &credential, sent, self.timeout) {
                Attempt::Success(text) => {
                    return serde_json::from_str(&text).map_err(|e| ClientError::BadResponse {
                        gateway: gw.clone(),
                        why: format!("{method} {path}: {e}"),
                    })
                }
                Attempt::Refused { status, body } => {
                    return Err(ClientError::from_status(
                        gw.clone(),
                        status,
                        error_body(status, &body),
                    ))
                }
                Attempt::Skip(reason) => {
                    tracing::debug!(gateway = %gw, %reason, "{method} {path}: trying the next gateway");
                    tried.push(GatewayFailure {
                        gateway: gw.clone(),
                        reason,
                    });
                }
            }
        }
        Err(ClientError::Unavailable { tried })
    }
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// The gateway's `{"error","message"}`, or a stand-in when a proxy or an older
/// gateway sent something else.
fn error_body(status: u16, text: &str) -> ApiErrorBody {
    serde_json::from_str(text).unwrap_or_else(|_| {
        let snippet: String = text.trim().chars().take(200).collect();
        ApiErrorBody {
            error: format!("http_{status}"),
            message: if snippet.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {snippet}")
            },
        }
    })
}

fn normalise_gateway(url: &str) -> Result<String, ClientError> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| ClientError::BadGatewayUrl {
            url: url.to_owned(),
            why: "it must start with http:// or https://".into(),
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(ClientError::BadGatewayUrl {
            url: url.to_owned(),
            why: "the host is missing".into(),
        });
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_checked_and_trailing_slashes_dropped() {
        assert_eq!(
            normalise_gateway("http://gw:7777/").unwrap(),
            "http://gw:7777"
        );
        assert_eq!(
            normalise_gateway(" https://gw/prefix ").unwrap(),
            "https://gw/prefix"
        );
        for bad in ["gw:7777", "http://", "ftp://gw", "http:///x"] {
            assert!(
                matches!(
                    normalise_gateway(bad),
                    Err(ClientError::BadGatewayUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn non_json_error_bodies_become_readable_messages() {
        let b = error_body(404, "<html>nope</html>");
        assert_eq!(b.error, "http_404");
        assert_eq!(b.message, "HTTP 404: <html>nope</html>");
        assert_eq!(error_body(400, "").message, "HTTP 400");
    }

    #[test]
    fn image_paths_encode_system_and_tag() {
        let c = Client::new(
            vec!["http://gw".into()],
            "my sys",
            Duration::from_secs(1),
            None,
            None,
        )
        .unwrap();
        let r = ImageRef::parse("127.0.0.1:5000/busybox:latest").unwrap();
        assert_eq!(
            c.image_path("lookup", &r),
            "/api/lookup/my%20sys/docker/127%2E0%2E0%2E1%3A5000%2Fbusybox%3Alatest/"
        );
    }

    #[test]
    fn empty_gateway_list_is_refused() {
        assert!(matches!(
            Client::new(vec![], "s", Duration::from_secs(1), None, None),
            Err(ClientError::NoGateways)
        ));
    }
}
