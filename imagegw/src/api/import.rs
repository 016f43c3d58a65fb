//! `doimport`: site-built squashfs images published as `custom:<name>`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use shifter_api::{ImageRecord, ImageRef, ImageStatus, ImageType};

use super::{key_for, parse_body, parse_type, record, requested_acl};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::{now, AppState};
use crate::store::StoredImage;
use crate::{jobs, owners, publish};

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

pub(super) async fn doimport(
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
    let actor = owners::Actor {
        uid: caller.uid,
        gids: &caller.gids,
        admin: caller.is_admin(&sys),
    };
    // Checked before the file is read (no copy for nothing) and again under
    // the import lock just before publishing, so a concurrent import by
    // another user cannot slip in between.
    owners::decide_import(previous.as_ref(), actor, &key.tag)?;
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
        let _publishing = state.imports.lock().await;
        let previous = state.store.get(&key).await?;
        let owner = owners::decide_import(previous.as_ref(), actor, &key.tag)?;
        let on_disk = jobs::file_meta(&state, &key, &meta, &acl).await?;
        let dir = image_dir.clone();
        tokio::task::spawn_blocking(move || publish::publish(&dir, &on_disk, &file))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        state.metrics.bytes_published(meta.size);
        let mut row =
            previous.unwrap_or_else(|| StoredImage::new_job(key.clone(), acl.clone(), now()));
        row.owner_uid = owner;
        row.id = meta.id.clone();
        row.acl = acl.clone();
        row.meta = Some(meta);
        row.status = ImageStatus::Ready;
        row.status_message = String::new();
        row.last_pull = now();
        row.updated = now();
        row.replica = publish::instance_name();
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
