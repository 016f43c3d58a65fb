//! The one error type every handler returns. 4xx bodies tell the user what to
//! do; 5xx bodies are generic and the detail goes only to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shifter_api::ApiErrorBody;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The registry failed us; the message is safe to show (it names the registry).
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Overloaded(String),
    /// Anything else: logged in full, shown as a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::BadGateway(_) => "registry_error",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The body the client sees.
    pub fn body(&self) -> ApiErrorBody {
        let message = match self {
            ApiError::Internal(_) => {
                "the gateway hit an internal error; the administrator can find details in its log"
                    .to_owned()
            }
            ApiError::Overloaded(m) => m.clone(),
            ApiError::BadGateway(m) => m.clone(),
            other => other.to_string(),
        };
        ApiErrorBody {
            error: self.kind().to_owned(),
            message,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::owners::OwnerError> for ApiError {
    fn from(e: crate::owners::OwnerError) -> Self {
        ApiError::Forbidden(e.to_string())
    }
}

impl From<shifter_api::RefError> for ApiError {
    fn from(e: shifter_api::RefError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "request refused");
        }
        (status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_hide_internals() {
        let e = ApiError::Internal("sqlite: disk I/O error at /var/lib/secret.db".into());
        let b = e.body();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!b.message.contains("/var/lib"), "{}", b.message);
        assert_eq!(b.error, "internal");
    }

    #[test]
    fn client_errors_carry_their_message() {
        let e = ApiError::Forbidden("uid 1002 is not in the image ACL".into());
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert_eq!(e.body().message, "uid 1002 is not in the image ACL");
    }
}
