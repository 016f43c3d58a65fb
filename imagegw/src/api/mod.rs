//! The HTTP API: `app(state)` builds the router from the route table in
//! `openapi`, so every route is documented and every documented route exists.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use shifter_api::record::PullProgress;
use shifter_api::{DockerRef, ImageAcl, ImageRecord, ImageRef, ImageStatus, ImageType};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::{Access, RouteSpec, ROUTES};
use crate::state::{AppState, SystemState};
use crate::store::{ImageKey, StoredImage};

mod admin;
mod images;
mod import;
mod service;

type AppRouter = MethodRouter<Arc<AppState>>;

fn handler_for(spec: &RouteSpec) -> AppRouter {
    let filter = match spec.method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        other => panic!("route table uses unsupported method {other}"),
    };
    let handler = match spec.path {
        "/api/lookup/{system}/{type}/{tag}/" => on(filter, images::lookup),
        "/api/pull/{system}/{type}/{tag}/" => on(filter, images::pull),
        "/api/list/{system}/" => on(filter, images::list),
        "/api/doimport/{system}/{type}/{tag}/" => on(filter, import::doimport),
        "/api/expire/{system}/{type}/{tag}/" => on(filter, admin::expire),
        "/api/autoexpire/{system}/" => on(filter, admin::autoexpire),
        "/api/metrics/{system}/" => on(filter, admin::system_metrics),
        "/api/queue/{system}/" => on(filter, service::queue),
        "/api/login/{system}/" => on(filter, service::login),
        "/healthz" => on(filter, service::healthz),
        "/metrics" => on(filter, service::prometheus),
        "/openapi.json" => on(filter, service::openapi),
        other => panic!("route {other} is documented but has no handler"),
    };
    // Every authenticated route hashes its body for the credential check;
    // the `Caller` extractor refuses a request that did not pass here.
    if spec.access == Access::Public {
        handler
    } else {
        handler.route_layer(axum::middleware::from_fn(crate::auth::bind_body))
    }
}

/// The gateway's router, ready to serve or to drive with `oneshot` in tests.
pub fn app(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for spec in ROUTES {
        router = router.route(spec.path, handler_for(spec));
    }
    let router = router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_request,
        ))
        .fallback(no_route);
    with_layers(router).with_state(state)
}

/// The layers every gateway response goes through (request ids, tracing);
/// public so the benchmark's static floor runs the same stack.
pub fn with_layers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            // The path is logged, never the headers: they carry credentials.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

async fn count_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    state
        .metrics
        .request(method.as_str(), &route, resp.status().as_u16());
    resp
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!(
        "no such endpoint: {method} {} (see /openapi.json)",
        uri.path()
    ))
}

/// Docker Hub references go to `default_registry` when a site configured a
/// mirror; such a mirror serves Hub's `library/` images under their bare name.
pub fn registry_for(d: &DockerRef, default_registry: &str) -> DockerRef {
    let hub = shifter_api::reference::DOCKER_HUB;
    if d.registry != hub || default_registry == hub || default_registry.is_empty() {
        return d.clone();
    }
    let mut out = d.clone();
    out.registry = default_registry.to_owned();
    if let Some(rest) = out.repository.strip_prefix("library/") {
        out.repository = rest.to_owned();
    }
    out
}

pub(super) fn parse_type(s: &str) -> Result<ImageType, ApiError> {
    ImageType::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!("unknown image type {s:?}: use docker or custom"))
    })
}

pub(super) fn key_for(system: &str, r: &ImageRef) -> ImageKey {
    ImageKey {
        system: system.to_owned(),
        itype: r.image_type().as_str().to_owned(),
        tag: r.tag(),
    }
}

pub(super) fn parse_id_list(what: &str, s: Option<&str>) -> Result<Vec<u32>, ApiError> {
    let Some(s) = s else { return Ok(vec![]) };
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(part.parse::<u32>().map_err(|_| {
            ApiError::BadRequest(format!(
                "{what} must be comma-separated numbers, got {part:?}"
            ))
        })?);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The ACL a request asks for. A caller who restricts an image always keeps
/// access to it themselves.
pub(super) fn requested_acl(
    uids: Option<&str>,
    gids: Option<&str>,
    caller: &Caller,
) -> Result<ImageAcl, ApiError> {
    let mut acl = ImageAcl {
        uids: parse_id_list("allowed_uids", uids)?,
        gids: parse_id_list("allowed_gids", gids)?,
    };
    if !acl.is_public() && !acl.admits(caller.uid, &caller.gids) {
        acl.uids.push(caller.uid);
        acl.uids.sort_unstable();
    }
    Ok(acl)
}

pub(super) fn parse_body<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The published ACL of a row (what lookup and list enforce).
pub(super) fn published_acl(row: &StoredImage) -> &ImageAcl {
    row.meta.as_ref().map(|m| &m.acl).unwrap_or(&row.acl)
}

pub(super) fn may_read(row: &StoredImage, caller: &Caller, sys: &SystemState) -> bool {
    caller.is_admin(sys) || published_acl(row).admits(caller.uid, &caller.gids)
}

/// `lookup_view`: report the published image (READY) rather than the state of
/// a re-pull that may be running for the same tag.
pub(super) fn record(
    row: &StoredImage,
    lookup_view: bool,
    progress: Option<PullProgress>,
) -> ImageRecord {
    let meta = row.meta.clone().unwrap_or_default();
    let status = if lookup_view && row.is_published() {
        ImageStatus::Ready
    } else {
        row.status
    };
    let acl = if lookup_view {
        published_acl(row).clone()
    } else {
        row.acl.clone()
    };
    // A private copy is shown under the reference its owner names it by.
    let (tag, private_copy) = match crate::owners::split_private(&row.key.tag) {
        Some((_, shared)) => (shared.to_owned(), true),
        None => (row.key.tag.clone(), false),
    };
    ImageRecord {
        id: row.id.clone(),
        system: row.key.system.clone(),
        itype: row.key.itype.clone(),
        tag: vec![tag],
        status,
        status_message: if lookup_view {
            String::new()
        } else {
            row.status_message.clone()
        },
        user_acl: acl.uids,
        group_acl: acl.gids,
        env: meta.env,
        entry: meta.entrypoint,
        cmd: meta.cmd,
        workdir: meta.workdir.unwrap_or_default(),
        labels: meta.labels,
        last_pull: row.last_pull,
        size: meta.size,
        progress,
        owner: row.owner_uid,
        private_copy,
    }
}
