//! Lookup, pull and list: what users do with images.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use shifter_api::{ImageId, ImageList, ImageRecord, ImageRef, ImageStatus, ImageType, PullRequest};

use super::{key_for, may_read, parse_body, parse_type, record, registry_for, requested_acl};
use crate::auth::Caller;
use crate::engine::Credentials;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{ImageKey, StoredImage};
use crate::{jobs, owners};

pub(super) async fn lookup(
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
            .with_id(&system, id.as_str())
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
    // The caller's private copy of a docker tag shadows the shared tag, for
    // them alone (see `owners`).
    if ty == ImageType::Docker {
        let mine = private_key(&key, caller.uid);
        if let Some(row) = state.store.get(&mine).await? {
            if row.is_published() {
                return Ok(Json(record(&row, true, None)));
            }
        }
    }
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

/// The key of `uid`'s private copy of the shared docker tag `key`.
fn private_key(key: &ImageKey, uid: u32) -> ImageKey {
    ImageKey {
        tag: owners::private_tag(uid, &key.tag),
        ..key.clone()
    }
}

pub(super) async fn pull(
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
    let mut acl = requested_acl(
        req.allowed_uids.as_deref(),
        req.allowed_gids.as_deref(),
        &caller,
    )?;
    if req.private && acl.is_public() {
        // A private copy is private: without a list, only its owner uses it.
        acl.uids = vec![caller.uid];
    }
    let shared = key_for(&system, &r);
    let key = if req.private {
        private_key(&shared, caller.uid)
    } else {
        shared
    };
    let registry = registry_for(d, &state.default_registry).registry;
    let credentials = state
        .store
        .get_login(&system, caller.uid, &registry)
        .await?
        .map(|l| Credentials {
            username: l.username,
            password: l.password,
        });
    let actor = owners::Actor {
        uid: caller.uid,
        gids: &caller.gids,
        admin: caller.is_admin(sys),
    };
    let started =
        jobs::start_or_join(&state, sys, key.clone(), d.clone(), acl, actor, credentials).await?;
    if started.joined {
        tracing::debug!(image = %key, uid = caller.uid, "pull joined");
    }
    let progress = state.jobs.progress(&key).await;
    Ok(Json(record(&started.record, false, progress)))
}

pub(super) async fn list(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    Path(system): Path<String>,
) -> Result<Json<ImageList>, ApiError> {
    let sys = state.system(&system)?;
    let rows = state.store.list(&system).await?;
    let list = rows
        .iter()
        .filter(|r| r.is_published() && may_read(r, &caller, sys))
        // Private copies are named by their owner's lookups only; others in
        // their ACL use them by id, so listing them would only confuse.
        .filter(|r| {
            owners::split_private(&r.key.tag)
                .is_none_or(|(uid, _)| uid == caller.uid || caller.is_admin(sys))
        })
        .map(|r| record(r, true, None))
        .collect();
    Ok(Json(ImageList { list }))
}
