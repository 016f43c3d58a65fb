//! Pull jobs: one per (system, type, tag) at a time, run by a bounded pool of
//! workers, moving through PENDING → PULLING → CONVERSION → TRANSFER → READY
//! or FAILURE. Concurrent pulls of the same tag join the running job. The
//! store is updated at every transition so a restarted gateway knows what was
//! interrupted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shifter_api::record::PullProgress;
use shifter_api::{DockerRef, ImageAcl, ImageId, ImageMeta, ImageStatus};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::engine::{Credentials, EngineError, ProgressSink, PullSpec, Stage};
use crate::error::ApiError;
use crate::state::{now, AppState, SystemState};
use crate::store::{ImageKey, StoredImage};
use crate::{owners, publish};

pub const RESTART_MESSAGE: &str = "interrupted by gateway restart; pull again";
pub const SHUTDOWN_MESSAGE: &str = "interrupted by gateway shutdown; pull again";
/// A pull whose job finished this recently returns that job's result instead
/// of starting another: clients poll by repeating the pull, and a job array
/// calling `pull` from every task must not hammer the registry.
pub const RECENT_PULL_SECS: i64 = 10;

/// In-memory view of a running job.
#[derive(Default)]
pub struct JobState {
    pub progress: Mutex<PullProgress>,
    staging: Mutex<Option<PathBuf>>,
}

pub struct Jobs {
    running: tokio::sync::Mutex<HashMap<ImageKey, Arc<JobState>>>,
    workers: Arc<Semaphore>,
    max_jobs: usize,
}

impl Jobs {
    pub fn new(workers: usize) -> Jobs {
        Jobs {
            running: Default::default(),
            workers: Arc::new(Semaphore::new(workers.max(1))),
            max_jobs: workers.max(1) * 32,
        }
    }

    pub async fn progress(&self, key: &ImageKey) -> Option<PullProgress> {
        let running = self.running.lock().await;
        running
            .get(key)
            .map(|j| *j.progress.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub async fn running_keys(&self) -> Vec<ImageKey> {
        let mut keys: Vec<_> = self.running.lock().await.keys().cloned().collect();
        keys.sort();
        keys
    }

    pub async fn is_running(&self, key: &ImageKey) -> bool {
        self.running.lock().await.contains_key(key)
    }
}

/// Result of asking for a pull.
pub struct Started {
    pub record: StoredImage,
    pub joined: bool,
}

/// Starts a pull of `reference` for `key`, or joins the one already running.
/// `requested` is the ACL the caller asked for; the owner rule
/// (`owners::decide_pull`) decides what the tag gets, under the job table's
/// lock so two first pulls cannot both become the owner.
pub async fn start_or_join(
    state: &Arc<AppState>,
    sys: &Arc<SystemState>,
    key: ImageKey,
    reference: DockerRef,
    requested: ImageAcl,
    actor: owners::Actor<'_>,
    credentials: Option<Credentials>,
) -> Result<Started, ApiError> {
    let mut running = state.jobs.running.lock().await;
    let previous = state.store.get(&key).await?;
    let shown = owners::split_private(&key.tag).map_or(key.tag.as_str(), |(_, t)| t);
    let decision = owners::decide_pull(previous.as_ref(), actor, &requested, shown)?;
    if running.contains_key(&key) {
        drop(running);
        let record = previous
            .ok_or_else(|| ApiError::Internal(format!("running job {key} has no record")))?;
        return Ok(Started {
            record,
            joined: true,
        });
    }
    let acl = decision.acl;
    if let Some(prev) = &previous {
        // Clients poll by repeating the pull, so a job that just finished is
        // reported rather than started again.
        let recent = now() - prev.updated < RECENT_PULL_SECS;
        let same_acl = prev.meta.as_ref().map(|m| &m.acl) == Some(&acl);
        let ready = prev.status == ImageStatus::Ready && prev.is_published() && same_acl;
        if recent && (ready || prev.status == ImageStatus::Failure) {
            return Ok(Started {
                record: prev.clone(),
                joined: true,
            });
        }
    }
    if running.len() >= state.jobs.max_jobs {
        return Err(ApiError::Overloaded(format!(
            "the gateway already has {} pulls queued; try again in a few minutes",
            running.len()
        )));
    }
    let mut record =
        previous.unwrap_or_else(|| StoredImage::new_job(key.clone(), acl.clone(), now()));
    record.status = ImageStatus::Pending;
    record.status_message = String::new();
    record.replica = publish::instance_name();
    record.owner_uid = decision.owner;
    record.acl = acl;
    record.updated = now();
    state.store.put(&record).await?;
    let job = Arc::new(JobState::default());
    running.insert(key.clone(), job.clone());
    drop(running);
    state.metrics.job_started();
    tracing::info!(image = %key, reference = %reference.canonical(), owner = ?record.owner_uid, "pull job started");
    // The job keeps the starting request's span, so its logs carry that request id.
    let task = run(state.clone(), sys.clone(), key, reference, credentials, job);
    tokio::spawn(task.in_current_span());
    Ok(Started {
        record,
        joined: false,
    })
}

/// Outcome of a job, with the user-facing message for failures.
enum Failure {
    User(String),
    Internal(String),
}

async fn run(
    state: Arc<AppState>,
    sys: Arc<SystemState>,
    key: ImageKey,
    reference: DockerRef,
    credentials: Option<Credentials>,
    job: Arc<JobState>,
) {
    let started = Instant::now();
    let outcome = run_inner(&state, &sys, &key, &reference, credentials, &job).await;
    let staging = job.staging.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(staging) = staging {
        let _ = tokio::task::spawn_blocking(move || publish::remove_staging(&staging)).await;
    }
    let status = match outcome {
        Ok(()) => ImageStatus::Ready,
        Err(f) => {
            let message = match f {
                Failure::User(m) => m,
                Failure::Internal(detail) => {
                    tracing::error!(image = %key, error = %detail, "pull failed inside the gateway");
                    internal_failure_message(&reference.canonical(), &detail)
                }
            };
            tracing::warn!(image = %key, message = %message, "pull failed");
            if let Err(e) = set_status(&state, &key, ImageStatus::Failure, &message).await {
                tracing::error!(image = %key, error = %e, "cannot record pull failure");
            }
            ImageStatus::Failure
        }
    };
    state.metrics.job_finished(status, started.elapsed());
    state.jobs.running.lock().await.remove(&key);
}

async fn set_status(
    state: &AppState,
    key: &ImageKey,
    status: ImageStatus,
    message: &str,
) -> Result<(), crate::store::StoreError> {
    if let Some(mut row) = state.store.get(key).await? {
        row.status = status;
        row.status_message = message.to_owned();
        row.updated = now();
        state.store.put(&row).await?;
    }
    Ok(())
}

/// What the user is told about a failure inside the gateway: a full disk is
/// named (the user cannot fix it, but knows to ask and that retrying later can
/// work); anything else stays generic because the detail may carry internals.
fn internal_failure_message(reference: &str, detail: &str) -> String {
    // Errors cross the engine boundary as text, so the errno is found there.
    let full = ["(os error 28)", "(os error 122)"]
        .iter()
        .any(|e| detail.contains(e));
    if full {
        let place = if detail.contains("blob cache") {
            "blob cache"
        } else {
            "image directory"
        };
        return format!(
            "pull of {reference} failed: no space left on the gateway's {place}; ask the administrator to free space, then pull again"
        );
    }
    format!(
        "pull of {reference} failed inside the gateway; the administrator can find details in its log"
    )
}

/// `reference` is what the user asked for, `fetched` where it was pulled from
/// (they differ when Docker Hub references go to a configured mirror).
fn engine_failure(reference: &DockerRef, fetched: &DockerRef, e: EngineError) -> Failure {
    let what = format!(
        "pull of {} from registry {} failed",
        reference.canonical(),
        fetched.registry
    );
    match e {
        EngineError::NotFound(m) | EngineError::Registry(m) | EngineError::Rejected(m) => {
            Failure::User(format!("{what}: {m}"))
        }
        EngineError::Internal(m) => Failure::Internal(format!("{what}: {m}")),
    }
}

struct Sink {
    state: Arc<AppState>,
    key: ImageKey,
    job: Arc<JobState>,
    handle: tokio::runtime::Handle,
}

impl ProgressSink for Sink {
    fn stage(&self, stage: Stage) {
        let status = match stage {
            Stage::Pulling => ImageStatus::Pulling,
            Stage::Conversion => ImageStatus::Conversion,
        };
        // Called on the engine's blocking thread, where block_on is allowed.
        if let Err(e) = self
            .handle
            .block_on(set_status(&self.state, &self.key, status, ""))
        {
            tracing::warn!(image = %self.key, error = %e, "cannot record job status");
        }
    }

    fn bytes(&self, progress: PullProgress) {
        let mut p = self.job.progress.lock().unwrap_or_else(|p| p.into_inner());
        if progress.bytes_downloaded > p.bytes_downloaded {
            self.state
                .metrics
                .bytes_downloaded(progress.bytes_downloaded - p.bytes_downloaded);
        }
        *p = progress;
    }
}

/// The ACL written into `<id>.json`: the same content may be published under
/// several tags, and a public tag makes the content public anyway, so the file
/// admits whoever any tag of it admits.
fn merged_acl(acls: &[&ImageAcl]) -> ImageAcl {
    if acls.iter().any(|a| a.is_public()) {
        return ImageAcl::default();
    }
    let mut out = ImageAcl::default();
    for a in acls {
        out.uids.extend(&a.uids);
        out.gids.extend(&a.gids);
    }
    out.uids.sort_unstable();
    out.uids.dedup();
    out.gids.sort_unstable();
    out.gids.dedup();
    out
}

/// `<id>.json` as the published rows of `base.id` (and `extra`, a tag about to
/// point at it with that ACL) make it: the union of their ACLs, their tags.
fn merged_meta(
    base: &ImageMeta,
    rows: &[StoredImage],
    extra: Option<(&ImageKey, &ImageAcl)>,
) -> ImageMeta {
    let others: Vec<&StoredImage> = rows
        .iter()
        .filter(|r| r.id == base.id && r.is_published())
        .filter(|r| extra.is_none_or(|(k, _)| r.key != *k))
        .collect();
    let mut acls: Vec<&ImageAcl> = others
        .iter()
        .filter_map(|r| r.meta.as_ref().map(|m| &m.acl))
        .collect();
    let mut meta = base.clone();
    meta.tags = others.iter().map(|r| r.key.tag.clone()).collect();
    if let Some((key, acl)) = extra {
        acls.push(acl);
        meta.tags.push(key.tag.clone());
    }
    meta.acl = merged_acl(&acls);
    meta.tags.sort();
    meta.tags.dedup();
    meta
}

/// What goes into `<id>.json` for `id` once `key` points at it with `acl`.
pub(crate) async fn file_meta(
    state: &AppState,
    key: &ImageKey,
    base: &ImageMeta,
    acl: &ImageAcl,
) -> Result<ImageMeta, crate::store::StoreError> {
    let rows = state.store.list(&key.system).await?;
    Ok(merged_meta(base, &rows, Some((key, acl))))
}

/// After a tag stopped pointing at `id` (expiry): rewrites `<id>.json`, and the
/// squashfs mode with it, from the tags that remain, so the file never admits
/// more than they do (a public tag gone must not leave the image public).
/// False when no tag is left, and nothing was written.
pub(crate) async fn refresh_file_meta(
    state: &AppState,
    sys: &SystemState,
    id: &ImageId,
) -> Result<bool, ApiError> {
    let rows = state.store.list(&sys.name).await?;
    let Some(base) = rows
        .iter()
        .find(|r| r.id == id.as_str() && r.is_published())
        .and_then(|r| r.meta.clone())
    else {
        return Ok(false);
    };
    let meta = merged_meta(&base, &rows, None);
    let dir = sys.cfg.image_dir.clone();
    let id = id.clone();
    tokio::task::spawn_blocking(move || publish::set_meta(&dir, &id, &meta))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(true)
}

async fn run_inner(
    state: &Arc<AppState>,
    sys: &Arc<SystemState>,
    key: &ImageKey,
    reference: &DockerRef,
    credentials: Option<Credentials>,
    job: &Arc<JobState>,
) -> Result<(), Failure> {
    let internal = |e: &dyn std::fmt::Display| Failure::Internal(e.to_string());
    let _permit = state.workers_permit().await.map_err(|e| internal(&e))?;
    set_status(state, key, ImageStatus::Pulling, "")
        .await
        .map_err(|e| internal(&e))?;
    let image_dir = sys.cfg.image_dir.clone();
    let dir = image_dir.clone();
    let staging = tokio::task::spawn_blocking(move || publish::new_staging(&dir))
        .await
        .map_err(|e| internal(&e))?
        .map_err(|e| internal(&e))?;
    *job.staging.lock().unwrap_or_else(|p| p.into_inner()) = Some(staging.clone());

    let spec = PullSpec {
        reference: crate::api::registry_for(reference, &state.default_registry),
        platform: shifter_api::Platform {
            os: sys.cfg.os.clone(),
            architecture: sys.cfg.arch.clone(),
            variant: sys.cfg.variant.clone(),
        },
        keep_setuid: sys.cfg.keep_setuid,
        compression: sys.cfg.compression.clone(),
        credentials,
    };
    let sink = Sink {
        state: state.clone(),
        key: key.clone(),
        job: job.clone(),
        handle: tokio::runtime::Handle::current(),
    };
    if let Some(()) = unchanged(state, sys, key, reference, &spec).await? {
        return Ok(());
    }
    let engine = state.engine.clone();
    let conv_start = Instant::now();
    let staging2 = staging.clone();
    let mapped = spec.reference.clone();
    let pulled = tokio::task::spawn_blocking(move || engine.pull(&spec, &staging2, &sink))
        .await
        .map_err(|e| internal(&e))?
        .map_err(|e| engine_failure(reference, &mapped, e))?;
    state.metrics.conversion_finished(conv_start.elapsed());

    set_status(state, key, ImageStatus::Transfer, "")
        .await
        .map_err(|e| internal(&e))?;
    let row = state
        .store
        .get(key)
        .await
        .map_err(|e| internal(&e))?
        .ok_or_else(|| Failure::Internal(format!("record of {key} vanished during the pull")))?;
    let id = ImageId::parse(&pulled.meta.id)
        .map_err(|_| Failure::Internal(format!("engine returned bad id {:?}", pulled.meta.id)))?;
    let mut tag_meta = pulled.meta.clone();
    tag_meta.acl = row.acl.clone();
    tag_meta.tags = vec![key.tag.clone()];
    let on_disk = file_meta(state, key, &pulled.meta, &row.acl)
        .await
        .map_err(|e| internal(&e))?;
    let size = pulled.meta.size;
    let sq = pulled.squashfs.clone();
    tokio::task::spawn_blocking(move || publish::publish(&image_dir, &on_disk, &sq))
        .await
        .map_err(|e| internal(&e))?
        .map_err(|e| internal(&e))?;
    state.metrics.bytes_published(size);

    let mut row = row;
    row.id = id.to_string();
    row.meta = Some(tag_meta);
    row.status = ImageStatus::Ready;
    row.status_message = String::new();
    row.last_pull = now();
    row.updated = now();
    state.store.put(&row).await.map_err(|e| internal(&e))?;
    tracing::info!(image = %key, id = %id, size, "image published");
    Ok(())
}

/// Re-pull of a published tag whose manifest did not change: nothing to
/// download or convert; refresh the record (and the ACL in `<id>.json`).
async fn unchanged(
    state: &Arc<AppState>,
    sys: &Arc<SystemState>,
    key: &ImageKey,
    reference: &DockerRef,
    spec: &PullSpec,
) -> Result<Option<()>, Failure> {
    let internal = |e: &dyn std::fmt::Display| Failure::Internal(e.to_string());
    let Some(mut row) = state.store.get(key).await.map_err(|e| internal(&e))? else {
        return Ok(None);
    };
    let Some(meta) = row.meta.clone().filter(|_| row.is_published()) else {
        return Ok(None);
    };
    let engine = state.engine.clone();
    let spec2 = spec.clone();
    let resolved = tokio::task::spawn_blocking(move || engine.resolve(&spec2))
        .await
        .map_err(|e| internal(&e))?
        .map_err(|e| engine_failure(reference, &spec.reference, e))?;
    if resolved.as_deref() != Some(row.id.as_str()) {
        return Ok(None);
    }
    let id = ImageId::parse(&row.id).map_err(|e| internal(&e))?;
    if !sys.cfg.image_dir.join(id.squashfs_name()).is_file() {
        return Ok(None);
    }
    if meta.acl != row.acl {
        let on_disk = file_meta(state, key, &meta, &row.acl)
            .await
            .map_err(|e| internal(&e))?;
        let dir = sys.cfg.image_dir.clone();
        let id2 = id.clone();
        tokio::task::spawn_blocking(move || publish::set_meta(&dir, &id2, &on_disk))
            .await
            .map_err(|e| internal(&e))?
            .map_err(|e| internal(&e))?;
    }
    let mut tag_meta = meta;
    tag_meta.acl = row.acl.clone();
    row.meta = Some(tag_meta);
    row.status = ImageStatus::Ready;
    row.status_message = String::new();
    row.last_pull = now();
    row.updated = now();
    state.store.put(&row).await.map_err(|e| internal(&e))?;
    tracing::info!(image = %key, id = %id, "tag unchanged in the registry; image kept");
    Ok(Some(()))
}

impl AppState {
    async fn workers_permit(
        &self,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, tokio::sync::AcquireError> {
        self.jobs.workers.acquire().await
    }
}

/// After a restart: nothing is running, so every job the store still shows
/// in flight was interrupted; and whatever this host left half-written in the
/// image directories goes.
pub async fn recover(state: &AppState) -> Result<(), crate::store::StoreError> {
    let failed = state
        .store
        .fail_in_flight(RESTART_MESSAGE, &publish::instance_name())
        .await?;
    for key in &failed {
        tracing::warn!(image = %key, "pull interrupted by restart marked FAILURE");
    }
    for sys in state.systems.values() {
        let dir = sys.cfg.image_dir.clone();
        match tokio::task::spawn_blocking(move || publish::clean_leftovers(&dir)).await {
            Ok(Ok(removed)) => {
                for p in removed {
                    tracing::warn!(path = %p.display(), "removed leftover of an interrupted pull");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(system = %sys.name, error = %e, "cannot clean image directory")
            }
            Err(e) => tracing::error!(error = %e, "cleanup task failed"),
        }
    }
    Ok(())
}

/// On shutdown: give running jobs `grace` to finish, then mark the rest
/// FAILURE and remove their staging directories.
pub async fn drain(state: &AppState, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        let left = state.jobs.running.lock().await.len();
        if left == 0 {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running: Vec<(ImageKey, Arc<JobState>)> = state
        .jobs
        .running
        .lock()
        .await
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, job) in running {
        tracing::warn!(image = %key, "pull still running at shutdown; marking it failed");
        if let Err(e) = set_status(state, &key, ImageStatus::Failure, SHUTDOWN_MESSAGE).await {
            tracing::error!(image = %key, error = %e, "cannot record interrupted pull");
        }
        let staging = job.staging.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(staging) = staging {
            publish::remove_staging(&staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_in_the_failure_and_other_internal_errors_stay_generic() {
        let cache = internal_failure_message(
            "r/x:1",
            "blob cache: write /c/blobs/x: No space left on device (os error 28) at path \"/c/tmp\"",
        );
        assert!(
            cache.contains("no space left on the gateway's blob cache"),
            "{cache}"
        );
        assert!(!cache.contains("/c/"), "no paths leak: {cache}");
        let images = internal_failure_message(
            "r/x:1",
            "i/o error writing the image: No space left on device (os error 28)",
        );
        assert!(
            images.contains("no space left on the gateway's image directory"),
            "{images}"
        );
        let other = internal_failure_message("r/x:1", "database is locked at /var/lib/x");
        assert!(other.contains("failed inside the gateway"), "{other}");
        assert!(!other.contains("/var/lib"), "{other}");
    }

    #[test]
    fn file_acl_is_public_if_any_tag_is_public_else_the_union() {
        let a = ImageAcl {
            uids: vec![1],
            gids: vec![],
        };
        let b = ImageAcl {
            uids: vec![2],
            gids: vec![7],
        };
        assert_eq!(
            merged_acl(&[&a, &b]),
            ImageAcl {
                uids: vec![1, 2],
                gids: vec![7]
            }
        );
        assert!(merged_acl(&[&a, &ImageAcl::default()]).is_public());
    }
}
