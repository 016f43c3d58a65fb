//! The plugin's only door to runtime-core: prepare the container root once per
//! step (in slurmstepd, as root, in a fresh private mount namespace that every
//! task forked afterwards inherits) and enter it in each task.

use std::path::PathBuf;

use runtime_core::Config;
use shifter_api::ImageId;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ContainerError {
    #[error("this build of the plugin has no container runtime yet (runtime-core prepare/enter): ask the site admin")]
    Unavailable,
}

/// Everything the node knows about the step, as plain data.
// Read by runtime-core's prepare() once it lands; until then only carried.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct StepSpec<'a> {
    pub config: &'a Config,
    pub image: &'a ImageId,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub volumes: Vec<String>,
    /// `None`: the site's default modules.
    pub modules: Option<Vec<String>>,
    pub job_env: Vec<String>,
    pub job: u32,
    pub step: u32,
}

/// A prepared container root, kept in slurmstepd between callbacks.
#[allow(dead_code)]
#[derive(Debug)]
pub struct Prepared {
    pub image: ImageId,
}

/// Where a task ended up, for the one-line notice when the submit directory
/// does not exist in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    pub cwd: PathBuf,
    pub cwd_fallback_from: Option<PathBuf>,
}

pub fn prepare(spec: &StepSpec<'_>) -> Result<Prepared, ContainerError> {
    let _ = spec;
    Err(ContainerError::Unavailable)
}

pub fn enter(prepared: &Prepared, cwd: Option<PathBuf>) -> Result<Entered, ContainerError> {
    let _ = (prepared, cwd);
    Err(ContainerError::Unavailable)
}

/// The task's environment inside the container (job env, then image ENV,
/// modules and site edits), as `KEY=VALUE`.
pub fn environment(prepared: &Prepared, job_env: &[String]) -> Vec<String> {
    let _ = prepared;
    job_env.to_vec()
}
