//! Administrator operations: expire, autoexpire, per-system metrics.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use std::collections::BTreeMap;

use serde_json::json;
use shifter_api::{ImageId, ImageRecord, ImageRef, ImageStatus};

use super::{key_for, parse_type, record};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::{now, AppState, SystemState};
use crate::store::StoredImage;
use crate::{jobs, publish};

/// Deletes a row, and the files when no other tag still points at them;
/// otherwise `<id>.json` and the squashfs mode are recomputed from the tags
/// that remain.
async fn expire_row(
    state: &AppState,
    sys: &SystemState,
    row: &StoredImage,
) -> Result<(), ApiError> {
    state.store.delete(&row.key).await?;
    if row.id.is_empty() {
        return Ok(());
    }
    let id = ImageId::parse(&row.id).map_err(ApiError::internal)?;
    let still_used = state
        .store
        .list(&row.key.system)
        .await?
        .iter()
        .any(|r| r.id == row.id);
    if still_used {
        jobs::refresh_file_meta(state, sys, &id).await?;
    } else {
        let dir = sys.cfg.image_dir.clone();
        tokio::task::spawn_blocking(move || publish::remove(&dir, &id))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    }
    tracing::info!(image = %row.key, id = %row.id, files_removed = !still_used, "image expired");
    Ok(())
}

pub(super) async fn expire(
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

pub(super) async fn autoexpire(
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

pub(super) async fn system_metrics(
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
