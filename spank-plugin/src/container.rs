//! The plugin's only door to runtime-core: prepare the container root once per
//! step (in slurmstepd, as root; runtime-core unshares slurmstepd's mount
//! namespace, so every task forked afterwards inherits the root and it all
//! goes away with the step) and enter it in each task.

use std::path::{Path, PathBuf};

use runtime_core::env::{choose_workdir, container_env, Env};
use runtime_core::setup::Request;
use runtime_core::sys::real::RealSys;
use runtime_core::{Config, PreparedRoot, UserInfo, Volume};
use shifter_api::{ImageId, ImageMeta};
use thiserror::Error;

use crate::timing::Phase;

#[derive(Debug, Error)]
pub enum ContainerError {
    #[error(transparent)]
    Image(#[from] runtime_core::ImageError),
    #[error(transparent)]
    Volume(#[from] runtime_core::VolumeError),
    #[error(transparent)]
    Setup(#[from] runtime_core::SetupError),
    #[error(transparent)]
    Entry(#[from] runtime_core::EntryError),
    #[error(transparent)]
    Sshd(#[from] runtime_core::sshd::SshdError),
    #[error("{0}")]
    Module(String),
    #[error("cannot change to {path} in the container: {source}")]
    Workdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the node knows about the step, as plain data.
#[derive(Debug, Clone)]
pub struct StepSpec<'a> {
    pub config: &'a Config,
    pub image: &'a ImageId,
    /// The reference as the user wrote it (`SHIFTER_IMAGEREQUEST`).
    pub request: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// `;`-separated `SOURCE:DEST[:flags]` volumes.
    pub volumes: Vec<String>,
    /// `None`: the site's default modules.
    pub modules: Option<Vec<String>>,
    /// The job's values of the variables modules select devices by
    /// (`select_devices_by`, e.g. `CUDA_VISIBLE_DEVICES`).
    pub device_env: Env,
    pub job: u32,
    pub step: u32,
    /// With `enable_sshd`: this node's name, for the job's sshd.
    pub sshd_node: Option<String>,
}

/// A prepared container root, kept in slurmstepd between callbacks.
#[derive(Debug)]
pub struct Prepared {
    root: PreparedRoot,
    config: Config,
    modules: Option<Vec<String>>,
    meta: ImageMeta,
    user: UserInfo,
    image: ImageId,
    request: String,
    /// The job's sshd as installed in the root, started by [`start_sshd`].
    sshd_plan: Option<runtime_core::sshd::Plan>,
    /// The step's sshd (`enable_sshd`), stopped by [`stop_sshd`].
    sshd: Option<runtime_core::sshd::Running>,
    /// Why this node has no sshd, told to the user by the node's first task.
    pub sshd_error: Option<String>,
}

/// Where a task ended up, for the one-line notice when the submit directory
/// does not exist in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    pub cwd: PathBuf,
    pub cwd_fallback_from: Option<PathBuf>,
}

/// The job's user with Slurm's view of the groups (which may differ from the
/// node's account database) and the name/home from the account database.
fn user_for(spec: &StepSpec<'_>) -> UserInfo {
    match UserInfo::lookup(spec.uid) {
        Ok(u) => UserInfo::from_ids(&u.name, spec.uid, spec.gid, &spec.groups, &u.home),
        Err(_) => UserInfo::from_ids(&spec.uid.to_string(), spec.uid, spec.gid, &spec.groups, "/"),
    }
}

fn modules<'c>(
    cfg: &'c Config,
    names: Option<&[String]>,
) -> Result<Vec<(&'c str, &'c runtime_core::Module)>, ContainerError> {
    cfg.resolve_modules(names).map_err(ContainerError::Module)
}

pub fn prepare(spec: &StepSpec<'_>) -> Result<Prepared, ContainerError> {
    let cfg = spec.config;
    let user = user_for(spec);
    let phase = Phase::start("check");
    let image = runtime_core::check_image(cfg, spec.image, &user)?;
    phase.done(spec.job, spec.step);
    let volumes = Volume::parse_all(&spec.volumes)?;
    let selected: Vec<(&str, runtime_core::Module)> = modules(cfg, spec.modules.as_deref())?
        .into_iter()
        .map(|(name, m)| (name, m.select_devices(|k| spec.device_env.get(k).cloned())))
        .collect();
    let mods: Vec<(&str, &runtime_core::Module)> =
        selected.iter().map(|(name, m)| (*name, m)).collect();
    // The step still runs without sshd when its keys cannot be made: ssh is
    // a convenience, the job's own tasks are what the user asked for.
    let (sshd_plan, sshd_error) = match &spec.sshd_node {
        Some(node) => match runtime_core::sshd::plan(cfg, &user, spec.job, node) {
            Ok(plan) => (Some(plan), None),
            Err(e) => (None, Some(e.to_string())),
        },
        None => (None, None),
    };
    let phase = Phase::start("mount+assemble");
    let root = runtime_core::prepare(
        &RealSys,
        cfg,
        &image,
        &user,
        &Request {
            volumes: &volumes,
            modules: &mods,
            sshd: sshd_plan.as_ref(),
        },
    )?;
    phase.done(spec.job, spec.step);
    Ok(Prepared {
        root,
        config: cfg.clone(),
        modules: spec.modules.clone(),
        meta: image.meta().clone(),
        user,
        image: spec.image.clone(),
        request: spec.request.to_owned(),
        sshd_plan,
        sshd: None,
        sshd_error,
    })
}

/// How long the step waits for its sshd to accept connections, so that the
/// job's other nodes can reach this one once its tasks run.
const SSHD_READY: std::time::Duration = std::time::Duration::from_secs(3);

/// With `enable_sshd`: the job's sshd in this step's container, as the user.
/// When the port is taken already (another step of the job on this node has
/// one, with the same keys) the step goes on without its own.
pub fn start_sshd(prepared: &mut Prepared, job: u32, node: &str) -> Result<(), ContainerError> {
    use runtime_core::sshd;
    let Some(plan) = &prepared.sshd_plan else {
        return Ok(()); // its error, if any, is in sshd_error already
    };
    let installed = sshd::installed(&prepared.config, plan);
    let taken = |addr| {
        tracing::warn!("job {job}: {addr} is in use on {node}; this step starts no sshd");
        Ok(())
    };
    if sshd::port_taken(installed.listen) {
        return taken(installed.listen);
    }
    let running = match sshd::start(
        &RealSys,
        &prepared.root,
        &prepared.user,
        &installed,
        SSHD_READY,
    ) {
        Err(sshd::SshdError::PortTaken(addr)) => return taken(addr),
        other => other?,
    };
    tracing::info!(pid = %running.pid, "job {job}: sshd listening on {}", running.listen);
    prepared.sshd = Some(running);
    Ok(())
}

/// At the end of the step (slurmstepd's exit callback).
pub fn stop_sshd(prepared: &mut Prepared) {
    if let Some(running) = prepared.sshd.take() {
        running.stop();
        tracing::debug!(pid = %running.pid, "sshd stopped");
    }
}

/// Per task, as root: chroot into the root, drop privileges' upper bounds,
/// and change to the submit directory if the container has it.
pub fn enter(prepared: &Prepared, cwd: Option<PathBuf>) -> Result<Entered, ContainerError> {
    runtime_core::enter(&RealSys, &prepared.root)?;
    let wanted = choose_workdir(
        cwd.as_deref(),
        prepared.meta.workdir.as_deref(),
        |p: &Path| p.is_dir(),
    );
    std::env::set_current_dir(&wanted).map_err(|source| ContainerError::Workdir {
        path: wanted.clone(),
        source,
    })?;
    let cwd_fallback_from = cwd.filter(|c| *c != wanted);
    Ok(Entered {
        cwd: wanted,
        cwd_fallback_from,
    })
}

/// After Slurm switched the task to the user: fail closed unless ids,
/// capabilities and no_new_privs are what they must be.
pub fn verify(prepared: &Prepared) -> Result<(), ContainerError> {
    Ok(runtime_core::entry::verify(&RealSys, &prepared.user)?)
}

/// The task's environment inside the container: job env, then image `ENV`,
/// modules and site edits, and `SHIFTER_IMAGE=id:<hex>` so that a nested
/// srun pins the same image.
pub fn environment(prepared: &Prepared, job_env: &[String]) -> Result<Vec<String>, ContainerError> {
    let job: Env = job_env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mods = modules(&prepared.config, prepared.modules.as_deref())?;
    let env = container_env(
        &job,
        &prepared.meta.env,
        &mods,
        &prepared.config,
        &format!("id:{}", prepared.image),
        &prepared.request,
    );
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}
