//! The HTTP API: `app(state)` builds the router from the route table in
//! `openapi`, so every route is documented and every documented route exists.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use shifter_api::record::PullProgress;
use shifter_api::{
    DockerRef, ImageAcl, ImageId, ImageList, ImageRecord, ImageRef, ImageStatus, ImageType,
    PullRequest,
};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Caller;
use crate::engine::Credentials;
use crate::error::ApiError;
use crate::jobs;
use crate::openapi::{RouteSpec, ROUTES};
use crate::publish;
use crate::state::{now, AppState, SystemState};
use crate::store::{ImageKey, RegistryLogin, StoredImage};

type AppRouter = MethodRouter<Arc<AppState>>;

fn handler_for(spec: &RouteSpec) -> AppRouter {
    let filter = match spec.method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        other => panic!("route table uses unsupported method {other}"),
    };
    match spec.path {
        "/api/lookup/{system}/{type}/{tag}/" => on(filter, lookup),
        "/api/pull/{system}/{type}/{tag}/" => on(filter, pull),
        "/api/list/{system}/" => on(filter, list),
        "/api/doimport/{system}/{type}/{tag}/" => on(filter, doimport),
        "/api/expire/{system}/{type}/{tag}/" => on(filter, expire),
        "/api/autoexpire/{system}/" => on(filter, autoexpire),
        "/api/metrics/{system}/" => on(filter, system_metrics),
        "/api/queue/{system}/" => on(filter, queue),
        "/api/login/{system}/" => on(filter, login),
        "/healthz" => on(filter, healthz),
        "/metrics" => on(filter, prometheus),
        "/openapi.json" => on(filter, openapi),
        other => panic!("route {other} is documented but has no handler"),
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

fn parse_type(s: &str) -> Result<ImageType, ApiError> {
    ImageType::parse(s).ok_or_else(|| {
        ApiError::BadRequest(format!("unknown image type {s:?}: use docker or custom"))
    })
}

fn key_for(system: &str, r: &ImageRef) -> ImageKey {
    ImageKey {
        system: system.to_owned(),
        itype: r.image_type().as_str().to_owned(),
        tag: r.tag(),
    }
}

fn parse_id_list(what: &str, s: Option<&str>) -> Result<Vec<u32>, ApiError> {
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
fn requested_acl(
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

fn parse_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The published ACL of a row (what lookup and list enforce).
fn published_acl(row: &StoredImage) -> &ImageAcl {
    row.meta.as_ref().map(|m| &m.acl).unwrap_or(&row.acl)
}

fn may_read(row: &StoredImage, caller: &Caller, sys: &SystemState) -> bool {
    caller.is_admin(sys) || published_acl(row).admits(caller.uid, &caller.gids)
}

/// `lookup_view`: report the published image (READY) rather than the state of
/// a re-pull that may be running for the same tag.
fn record(row: &StoredImage, lookup_view: bool, progress: Option<PullProgress>) -> ImageRecord {
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
    ImageRecord {
        id: row.id.clone(),
        system: row.key.system.clone(),
        itype: row.key.itype.clone(),
        tag: vec![row.key.tag.clone()],
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
    }
}

async fn lookup(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path((system, itype, tag)): Path<(String, String, String)>,
) -> Result<Json<ImageRecord>, ApiError> {
    let sys = state.system(&system)?;
    let ty = ImageType::parse(&itype).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown image type {itype:?}: use docker, custom or id"
        ))
    })?;
    if ty == ImageType::Id {
        let id = ImageId::parse(&tag)?;
        let rows: Vec<StoredImage> = state
            .store
            .list(&system)
            .await?
            .into_iter()
            .filter(|r| r.id == id.as_str() && r.is_published())
            .collect();
        if rows.is_empty() {
            return Err(ApiError::NotFound(format!(
                "no image with id {id} on system {system}"
            )));
        }
        let row = rows
            .iter()
            .find(|r| may_read(r, &caller, sys))
            .ok_or_else(|| {
                ApiError::Forbidden(format!("uid {} may not use image {id}", caller.uid))
            })?;
        return Ok(Json(record(row, true, None)));
    }
    let r = ImageRef::from_parts(ty, &tag)?;
    let key = key_for(&system, &r);
    let row = state.store.get(&key).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "image {r} is not on system {system}: pull it first (shifterimg pull {r})"
        ))
    })?;
    if !row.is_published() {
        let why = match row.status {
            ImageStatus::Failure => format!("its last pull failed: {}", row.status_message),
            st => format!("it is {st}; wait for the pull to finish"),
        };
        return Err(ApiError::NotFound(format!(
            "image {r} is not ready on system {system}: {why}"
        )));
    }
    if !may_read(&row, &caller, sys) {
        return Err(ApiError::Forbidden(format!(
            "uid {} is not allowed to use image {r}",
            caller.uid
        )));
    }
    Ok(Json(record(&row, true, None)))
}

async fn pull(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path((system, itype, tag)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<ImageRecord>, ApiError> {
    let sys = state.system(&system)?;
    let ty = parse_type(&itype)?;
    let r = ImageRef::from_parts(ty, &tag)?;
    let ImageRef::Docker(d) = &r else {
        return Err(ApiError::BadRequest(format!(
            "{r} cannot be pulled: custom images are imported (shifterimg import)"
        )));
    };
    let req: PullRequest = parse_body(&body)?;
    let acl = requested_acl(
        req.allowed_uids.as_deref(),
        req.allowed_gids.as_deref(),
        &caller,
    )?;
    let key = key_for(&system, &r);
    if let Some(existing) = state.store.get(&key).await? {
        if existing.is_published() && !may_read(&existing, &caller, sys) {
            return Err(ApiError::Forbidden(format!(
                "image {r} is restricted and uid {} is not in its ACL",
                caller.uid
            )));
        }
    }
    let registry = registry_for(d, &state.default_registry).registry;
    let credentials = state
        .store
        .get_login(&system, caller.uid, &registry)
        .await?
        .map(|l| Credentials {
            username: l.username,
            password: l.password,
        });
    let started =
        jobs::start_or_join(&state, sys, key.clone(), d.clone(), acl, credentials).await?;
    if started.joined {
        tracing::debug!(image = %key, uid = caller.uid, "pull joined");
    }
    let progress = state.jobs.progress(&key).await;
    Ok(Json(record(&started.record, false, progress)))
}

async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(system): Path<String>,
) -> Result<Json<ImageList>, ApiError> {
    let sys = state.system(&system)?;
    let rows = state.store.list(&system).await?;
    let list = rows
        .iter()
        .filter(|r| r.is_published() && may_read(r, &caller, sys))
        .map(|r| record(r, true, None))
        .collect();
    Ok(Json(ImageList { list }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    #[serde(default)]
    filepath: String,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    allowed_uids: Option<String>,
    #[serde(default)]
    allowed_gids: Option<String>,
}

async fn doimport(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path((system, itype, tag)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Json<ImageRecord>, ApiError> {
    let sys = state.system(&system)?.clone();
    caller.require_import(&sys)?;
    let ty = parse_type(&itype)?;
    if ty != ImageType::Custom {
        return Err(ApiError::BadRequest(
            "imports are published as custom:<name>; use type custom".into(),
        ));
    }
    let r = ImageRef::from_parts(ty, &tag)?;
    let req: ImportRequest = parse_body(&body)?;
    if req.filepath.is_empty() {
        return Err(ApiError::BadRequest(
            "body must give \"filepath\" of the squashfs to import".into(),
        ));
    }
    let acl = requested_acl(
        req.allowed_uids.as_deref(),
        req.allowed_gids.as_deref(),
        &caller,
    )?;
    let key = key_for(&system, &r);
    if state.jobs.is_running(&key).await {
        return Err(ApiError::Conflict(format!(
            "{r} is being pulled right now; import it under another name or later"
        )));
    }
    let previous = state.store.get(&key).await?;
    if let Some(p) = &previous {
        if p.is_published() && !may_read(p, &caller, &sys) {
            return Err(ApiError::Forbidden(format!(
                "{r} exists and uid {} is not in its ACL",
                caller.uid
            )));
        }
    }
    let image_dir = sys.cfg.image_dir.clone();
    let (uid, gids) = (caller.uid, caller.gids.clone());
    let format = req.format.unwrap_or_else(|| "squashfs".into());
    let name = key.tag.clone();
    let path = std::path::PathBuf::from(&req.filepath);
    let acl2 = acl.clone();
    let dir = image_dir.clone();
    let staged = tokio::task::spawn_blocking(move || {
        let staging = publish::new_staging(&dir).map_err(|e| ApiError::internal(&e))?;
        let res = crate::import::stage(&path, &format, &name, uid, &gids, acl2, &staging);
        Ok::<_, ApiError>((staging, res))
    })
    .await
    .map_err(ApiError::internal)??;
    let (staging, res) = staged;
    let result = async {
        let (meta, file) = res.map_err(|e| {
            if e.is_callers() {
                ApiError::BadRequest(e.to_string())
            } else {
                ApiError::internal(e)
            }
        })?;
        let on_disk = jobs::file_meta(&state, &key, &meta, &acl).await?;
        let dir = image_dir.clone();
        tokio::task::spawn_blocking(move || publish::publish(&dir, &on_disk, &file))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        state.metrics.bytes_published(meta.size);
        let mut row =
            previous.unwrap_or_else(|| StoredImage::new_job(key.clone(), acl.clone(), now()));
        row.id = meta.id.clone();
        row.acl = acl.clone();
        row.meta = Some(meta);
        row.status = ImageStatus::Ready;
        row.status_message = String::new();
        row.last_pull = now();
        row.updated = now();
        row.owner = publish::instance_name();
        state.store.put(&row).await?;
        tracing::info!(image = %key, id = %row.id, uid, "custom image imported");
        Ok::<_, ApiError>(row)
    }
    .await;
    tokio::task::spawn_blocking(move || publish::remove_staging(&staging))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(record(&result?, true, None)))
}

/// Deletes a row, and the files when no other tag still points at them.
async fn expire_row(
    state: &AppState,
    sys: &SystemState,
    row: &StoredImage,
) -> Result<(), ApiError> {
    state.store.delete(&row.key).await?;
    if row.id.is_empty() {
        return Ok(());
    }
    let still_used = state
        .store
        .list(&row.key.system)
        .await?
        .iter()
        .any(|r| r.id == row.id);
    if !still_used {
        let id = ImageId::parse(&row.id).map_err(ApiError::internal)?;
        let dir = sys.cfg.image_dir.clone();
        tokio::task::spawn_blocking(move || publish::remove(&dir, &id))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    }
    tracing::info!(image = %row.key, id = %row.id, files_removed = !still_used, "image expired");
    Ok(())
}

async fn expire(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path((system, itype, tag)): Path<(String, String, String)>,
) -> Result<Json<ImageRecord>, ApiError> {
    let sys = state.system(&system)?;
    caller.require_admin(sys)?;
    let r = ImageRef::from_parts(parse_type(&itype)?, &tag)?;
    let key = key_for(&system, &r);
    if state.jobs.is_running(&key).await {
        return Err(ApiError::Conflict(format!(
            "a pull of {r} is running; expire it once it finished"
        )));
    }
    let row = state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("image {r} is not on system {system}")))?;
    expire_row(&state, sys, &row).await?;
    let mut rec = record(&row, false, None);
    rec.status = ImageStatus::Expired;
    rec.status_message = String::new();
    Ok(Json(rec))
}

async fn autoexpire(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(system): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sys = state.system(&system)?;
    caller.require_admin(sys)?;
    let cutoff = now() - state.expire_after_secs;
    let running = state.jobs.running_keys().await;
    let mut expired = Vec::new();
    for row in state.store.list(&system).await? {
        let stale = if row.is_published() {
            row.last_pull < cutoff
        } else {
            row.status == ImageStatus::Failure && row.updated < cutoff
        };
        if stale && !running.contains(&row.key) {
            expire_row(&state, sys, &row).await?;
            expired.push(format!("{}:{}", row.key.itype, row.key.tag));
        }
    }
    let referenced: std::collections::HashSet<String> = state
        .store
        .list(&system)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let dir = sys.cfg.image_dir.clone();
    let before = std::time::UNIX_EPOCH + std::time::Duration::from_secs(cutoff.max(0) as u64);
    let removed = tokio::task::spawn_blocking(move || {
        let ids = publish::unreferenced(&dir, &referenced, before)?;
        for id in &ids {
            publish::remove(&dir, id)?;
        }
        Ok::<_, publish::PublishError>(ids)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let orphans: Vec<String> = removed.iter().map(|id| format!("id:{id}")).collect();
    if !orphans.is_empty() {
        tracing::info!(count = orphans.len(), "removed images no tag points at");
    }
    expired.extend(orphans);
    Ok(Json(json!({ "expired": expired })))
}

async fn system_metrics(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(system): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sys = state.system(&system)?;
    caller.require_admin(sys)?;
    let rows = state.store.list(&system).await?;
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &rows {
        *by_status.entry(r.status.as_str()).or_default() += 1;
    }
    let published: Vec<&StoredImage> = rows.iter().filter(|r| r.is_published()).collect();
    let mut ids: Vec<&str> = published.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let bytes: u64 = published
        .iter()
        .filter_map(|r| r.meta.as_ref().map(|m| (r.id.as_str(), m.size)))
        .collect::<BTreeMap<_, _>>()
        .values()
        .sum();
    Ok(Json(json!({
        "system": system,
        "tags": rows.len(),
        "images": ids.len(),
        "bytes": bytes,
        "by_status": by_status,
        "running": state.jobs.running_keys().await.iter().filter(|k| k.system == system).count(),
    })))
}

async fn queue(
    State(state): State<Arc<AppState>>,
    Path(system): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.system(&system)?;
    let mut queue = Vec::new();
    for key in state.jobs.running_keys().await {
        if key.system != system {
            continue;
        }
        if let Some(row) = state.store.get(&key).await? {
            queue.push(json!({"itype": key.itype, "tag": key.tag, "status": row.status}));
        }
    }
    Ok(Json(json!({ "queue": queue })))
}

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

async fn login(
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

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    // list() always reaches the database (get() may be answered from the cache).
    match state.store.list("").await {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unavailable");
            ApiError::Overloaded("the gateway's store is unavailable".into()).into_response()
        }
    }
}

async fn prometheus(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}
