//! Gateway client errors: one variant per thing a caller reacts to differently.

use shifter_api::ApiErrorBody;
use thiserror::Error;

/// Why one gateway was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayFailure {
    pub gateway: String,
    pub reason: String,
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no image gateway configured: set `gateways` in shifter.toml or pass --gateway URL")]
    NoGateways,
    #[error("invalid gateway URL {url:?}: {why}")]
    BadGatewayUrl { url: String, why: String },
    #[error("cannot create a munge credential for the gateway: {0}")]
    Munge(#[from] munge_sys::MungeError),
    /// 400: the gateway refused the reference or the request.
    #[error("{} (gateway {gateway})", body.message)]
    BadRequest { gateway: String, body: ApiErrorBody },
    /// 401: the gateway refused our credential.
    #[error("{} (gateway {gateway}; is munged running with the same key as the gateway's?)", body.message)]
    Unauthorized { gateway: String, body: ApiErrorBody },
    /// 403: ACL or admin rights.
    #[error("{} (gateway {gateway})", body.message)]
    Forbidden { gateway: String, body: ApiErrorBody },
    /// 404: unknown image, or not READY yet.
    #[error("{} (gateway {gateway})", body.message)]
    NotFound { gateway: String, body: ApiErrorBody },
    /// 409: conflicting operation in progress.
    #[error("{} (gateway {gateway})", body.message)]
    Conflict { gateway: String, body: ApiErrorBody },
    /// Any other 4xx.
    #[error("gateway {gateway} answered {status}: {}", body.message)]
    Rejected {
        gateway: String,
        status: u16,
        body: ApiErrorBody,
    },
    /// Every gateway failed to answer; each with its reason, in the order tried.
    #[error("no gateway answered (is the gateway running?): {}", list(tried))]
    Unavailable { tried: Vec<GatewayFailure> },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("pull of {image} still {status} after {}: check `shifterimg images` later", crate::transport::human_duration(*waited))]
    PullTimedOut {
        image: String,
        status: shifter_api::ImageStatus,
        waited: std::time::Duration,
    },
    #[error("gateway {gateway} sent a reply this client cannot read: {why}")]
    BadResponse { gateway: String, why: String },
}

fn list(tried: &[GatewayFailure]) -> String {
    tried
        .iter()
        .map(|f| format!("{}: {}", f.gateway, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ClientError {
    /// The gateway's error body for 4xx answers.
    pub fn body(&self) -> Option<&ApiErrorBody> {
        match self {
            ClientError::BadRequest { body, .. }
            | ClientError::Unauthorized { body, .. }
            | ClientError::Forbidden { body, .. }
            | ClientError::NotFound { body, .. }
            | ClientError::Conflict { body, .. }
            | ClientError::Rejected { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Sorts a final 4xx answer into a variant.
    pub(crate) fn from_status(gateway: String, status: u16, body: ApiErrorBody) -> Self {
        match status {
            400 => ClientError::BadRequest { gateway, body },
            401 => ClientError::Unauthorized { gateway, body },
            403 => ClientError::Forbidden { gateway, body },
            404 => ClientError::NotFound { gateway, body },
            409 => ClientError::Conflict { gateway, body },
            _ => ClientError::Rejected {
                gateway,
                status,
                body,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_lists_every_gateway_and_reason_in_order() {
        let e = ClientError::Unavailable {
            tried: vec![
                GatewayFailure {
                    gateway: "http://a".into(),
                    reason: "connection refused".into(),
                },
                GatewayFailure {
                    gateway: "http://b".into(),
                    reason: "timed out after 5 s".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "no gateway answered (is the gateway running?): http://a: connection refused; http://b: timed out after 5 s"
        );
    }

    #[test]
    fn client_errors_show_the_gateway_message() {
        let body = ApiErrorBody {
            error: "not_found".into(),
            message: "no image docker:x:1 on system s".into(),
        };
        let e = ClientError::from_status("http://gw".into(), 404, body.clone());
        assert!(matches!(e, ClientError::NotFound { .. }));
        assert_eq!(
            e.to_string(),
            "no image docker:x:1 on system s (gateway http://gw)"
        );
        assert_eq!(e.body(), Some(&body));
        let e = ClientError::from_status("http://gw".into(), 418, body);
        assert!(matches!(e, ClientError::Rejected { status: 418, .. }));
    }
}
