//! Registry logins and the service endpoints: queue, health, metrics, OpenAPI.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::parse_body;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::RegistryLogin;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    #[serde(default)]
    registry: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub(super) async fn login(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(system): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.system(&system)?;
    let req: LoginRequest = parse_body(&body)?;
    let registry = req.registry.trim().to_owned();
    let host_ok = !registry.is_empty()
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !host_ok {
        return Err(ApiError::BadRequest(format!(
            "registry {registry:?} must be a host[:port] such as registry.example.org:5000"
        )));
    }
    if req.username.is_empty() || req.password.is_empty() {
        return Err(ApiError::BadRequest(
            "username and password are both required".into(),
        ));
    }
    state
        .store
        .put_login(&RegistryLogin {
            system: system.clone(),
            uid: caller.uid,
            registry: registry.clone(),
            username: req.username.clone(),
            password: req.password,
        })
        .await?;
    tracing::info!(uid = caller.uid, registry = %registry, username = %req.username, "registry login stored");
    Ok(Json(
        json!({"result": "stored", "registry": registry, "username": req.username}),
    ))
}

/// In-flight pulls the caller could use once READY: a private pull's tag is
/// nobody else's business.
pub(super) async fn queue(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(system): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sys = state.system(&system)?;
    let mut queue = Vec::new();
    for key in state.jobs.running_keys().await {
        if key.system != system {
            continue;
        }
        if let Some(row) = state.store.get(&key).await? {
            if !(caller.is_admin(sys) || row.acl.admits(caller.uid, &caller.gids)) {
                continue;
            }
            queue.push(json!({"itype": key.itype, "tag": key.tag, "status": row.status}));
        }
    }
    Ok(Json(json!({ "queue": queue })))
}

pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    // list() always reaches the database (get() may be answered from the cache).
    match state.store.list("").await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unavailable");
            ApiError::Overloaded("the gateway's store is unavailable".into()).into_response()
        }
    }
}

pub(super) async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub(super) async fn openapi(_caller: Caller) -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
