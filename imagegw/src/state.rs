//! What every request handler shares: the systems served, the store, the pull
//! engine, the job table and the metrics.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::CredentialDecoder;
use crate::config::SystemConfig;
use crate::engine::PullEngine;
use crate::error::ApiError;
use crate::jobs::Jobs;
use crate::metrics::Metrics;
use crate::store::Store;

pub struct SystemState {
    pub name: String,
    pub cfg: SystemConfig,
    pub admins: Vec<u32>,
    pub import_users: Vec<u32>,
    pub decoder: Arc<dyn CredentialDecoder>,
}

pub struct AppState {
    pub systems: BTreeMap<String, Arc<SystemState>>,
    pub store: Arc<dyn Store>,
    pub engine: Arc<dyn PullEngine>,
    pub jobs: Jobs,
    pub metrics: Metrics,
    /// Where Docker Hub references are pulled from (a mirror, or docker.io itself).
    pub default_registry: String,
    pub expire_after_secs: i64,
    pub groups: crate::auth::GroupCache,
    /// Held while an import checks the tag's owner and publishes, so two
    /// importers of one name cannot both pass the owner check (per gateway:
    /// replicas sharing PostgreSQL do not share it).
    pub imports: tokio::sync::Mutex<()>,
}

impl AppState {
    pub fn new(
        systems: Vec<SystemState>,
        store: Arc<dyn Store>,
        engine: Arc<dyn PullEngine>,
        workers: usize,
    ) -> AppState {
        AppState {
            systems: systems
                .into_iter()
                .map(|s| (s.name.clone(), Arc::new(s)))
                .collect(),
            store,
            engine,
            jobs: Jobs::new(workers),
            metrics: Metrics::new(),
            default_registry: shifter_api::reference::DOCKER_HUB.into(),
            expire_after_secs: 90 * 86400,
            groups: Default::default(),
            imports: Default::default(),
        }
    }

    pub fn system(&self, name: &str) -> Result<&Arc<SystemState>, ApiError> {
        self.systems.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.systems.keys().map(String::as_str).collect();
            ApiError::NotFound(format!(
                "unknown system {name:?}: this gateway serves {}",
                known.join(", ")
            ))
        })
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
