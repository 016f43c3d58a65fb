//! slurmstepd: once per step per node (root, `init_post_opt`) decide what the
//! step runs in and prepare the container root; then per task enter it as
//! root (`task_init_privileged`) and set its environment as the user
//! (`task_init`). Setup errors are kept and raised from
//! `task_init_privileged`, where they reach the user's terminal, with the node
//! name, instead of vanishing into the slurmd log.

use shifter_api::{ImageId, ImageRef};
use spank_sys::{error_chain, Spank, BATCH_STEP_ID, EXTERN_STEP_ID};

use crate::container::{self, Prepared, StepSpec};
use crate::error::PluginError;
use crate::options::{SLURM_CONTAINER_IMAGE_OPTION_ENV, SLURM_IMAGE_OPTION_ENV};
use crate::pyxis;
use crate::request::{
    self, RawOptions, ENV_IMAGE, ENV_IMAGE_REQUEST, ENV_MODULE, ENV_VOLUME, ENV_WORKDIR,
};
use crate::state;
use crate::timing::{step_name, Phase};

/// What this node does for the step.
#[derive(Debug)]
pub enum StepPlan {
    /// A batch script that stays on the host; it only learns the image.
    Host { image: ImageId, request: String },
    Container {
        image: ImageId,
        request: String,
        prepared: Box<Prepared>,
        /// `--container-workdir`: where every task starts.
        workdir: Option<std::path::PathBuf>,
    },
    /// Setup failed; raised in every task.
    Failed(String),
}

/// The node's name as the user knows it (the UTS hostname of the slurmd).
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

pub fn init_post_opt(spank: &Spank) -> Result<(), PluginError> {
    let job = spank.job_id()?;
    let step = spank.step_id()?;
    if step == EXTERN_STEP_ID {
        return Ok(());
    }
    let plan = match plan_step(spank, job, step) {
        Ok(p) => p,
        Err(e) => {
            let msg = error_chain(&e);
            tracing::error!("job {job} step {}: {msg}", step_name(step));
            Some(StepPlan::Failed(msg))
        }
    };
    state::lock().step = plan;
    Ok(())
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// What the submit side pinned in the job's environment.
#[derive(Debug, Default)]
struct Pinned {
    image: Option<String>,
    volumes: Option<String>,
    modules: Option<String>,
    request: Option<String>,
    workdir: Option<String>,
}

/// The image, volumes and modules a step on this node uses.
#[derive(Debug, PartialEq, Eq)]
struct Choice {
    image: ImageId,
    volumes: String,
    modules: Option<String>,
    request: String,
    workdir: Option<String>,
}

/// The pinned environment written on the submit host wins; the raw option
/// (forwarded by Slurm) only matters when something bypassed the submit side,
/// and either way only an `id:` is accepted: a tag here was never resolved.
fn choose(pinned: &Pinned, opts: &RawOptions) -> Result<Option<Choice>, PluginError> {
    let (text, volumes, modules, request, workdir) = match &pinned.image {
        Some(img) => (
            img.clone(),
            pinned.volumes.clone().unwrap_or_default(),
            pinned.modules.clone(),
            pinned.request.clone().unwrap_or_else(|| img.clone()),
            pinned.workdir.clone(),
        ),
        None => match &opts.image {
            Some(img) => (
                img.clone(),
                opts.volumes.join(";"),
                opts.module.clone(),
                img.clone(),
                opts.workdir.clone(),
            ),
            None => return Ok(None),
        },
    };
    match ImageRef::parse(&text) {
        Ok(ImageRef::Id(image)) => Ok(Some(Choice {
            image,
            volumes,
            modules,
            request,
            workdir,
        })),
        _ => Err(PluginError::NotPinned { request: text }),
    }
}

fn plan_step(spank: &Spank, job: u32, step: u32) -> Result<Option<StepPlan>, PluginError> {
    let mut st = state::lock();
    let pinned = Pinned {
        // With `sbatch --export=NONE` only Slurm's spank copy of the pinned
        // option reaches the batch script.
        image: match nonempty(spank.getenv(ENV_IMAGE)?) {
            Some(i) => Some(i),
            None => match nonempty(spank.getenv(&format!("SLURM_SPANK_{SLURM_IMAGE_OPTION_ENV}"))?)
            {
                Some(i) => Some(i),
                None => nonempty(
                    spank.getenv(&format!("SLURM_SPANK_{SLURM_CONTAINER_IMAGE_OPTION_ENV}"))?,
                ),
            },
        },
        volumes: nonempty(spank.getenv(ENV_VOLUME)?),
        modules: nonempty(spank.getenv(ENV_MODULE)?),
        request: nonempty(spank.getenv(ENV_IMAGE_REQUEST)?),
        workdir: nonempty(spank.getenv(ENV_WORKDIR)?),
    };
    let Some(choice) = choose(&pinned, &st.opts)? else {
        return Ok(None);
    };
    let Choice {
        image,
        volumes,
        modules,
        request,
        workdir,
    } = choice;
    let workdir = match workdir {
        Some(w) => Some(pyxis::workdir(ENV_WORKDIR, &w)?),
        None => None,
    };
    // The batch script stays on the host (like Shifter): it lives in slurmd's
    // spool, which the container does not have. Its sruns use the image.
    if step == BATCH_STEP_ID {
        return Ok(Some(StepPlan::Host { image, request }));
    }
    let cfg = st.config()?.clone();
    let modules = match modules {
        Some(m) => Some(request::parse_modules(ENV_MODULE, &m, Some(&cfg))?),
        None => None,
    };
    let mut device_env = runtime_core::env::Env::new();
    for key in cfg.modules.values().flat_map(|m| &m.select_devices_by) {
        if let Some(v) = spank.getenv(key)? {
            device_env.insert(key.clone(), v);
        }
    }
    let spec = StepSpec {
        config: &cfg,
        image: &image,
        uid: spank.uid()?,
        gid: spank.gid()?,
        groups: spank.supplementary_gids()?,
        volumes: vec![volumes],
        modules,
        device_env,
        request: &request,
        job,
        step,
        sshd_node: cfg.enable_sshd.then(node_name),
    };
    let mut prepared = container::prepare(&spec)?;
    if let Some(msg) = &prepared.sshd_error {
        tracing::error!("job {job} step {}: {msg}", step_name(step));
    }
    if cfg.enable_sshd && prepared.sshd_error.is_none() {
        let phase = Phase::start("sshd");
        // The step still runs without it: ssh is a convenience, the job's
        // own tasks are what the user asked for.
        if let Err(e) = container::start_sshd(&mut prepared, job, &node_name()) {
            let msg = error_chain(&e);
            tracing::error!("job {job} step {}: {msg}", step_name(step));
            prepared.sshd_error = Some(msg);
        }
        phase.done(job, step);
    }
    Ok(Some(StepPlan::Container {
        image,
        request,
        prepared: Box::new(prepared),
        workdir,
    }))
}

/// slurmstepd's exit callback: the step's sshd goes with the step.
pub fn exit() {
    if let Some(StepPlan::Container { prepared, .. }) = &mut state::lock().step {
        container::stop_sshd(prepared);
    }
}

pub fn task_init_privileged(spank: &Spank) -> Result<(), PluginError> {
    let mut st = state::lock();
    let workdir = match &st.step {
        None | Some(StepPlan::Host { .. }) => return Ok(()),
        Some(StepPlan::Failed(msg)) => {
            return Err(PluginError::OnNode {
                node: node_name(),
                message: msg.trim_start_matches("shifter: ").to_owned(),
            })
        }
        Some(StepPlan::Container {
            prepared, workdir, ..
        }) => {
            // slurmstepd forked us in the submit directory on the host; the
            // runtime picks the directory inside the container instead,
            // unless the user named one.
            let cwd = match workdir {
                Some(w) => Some(w.clone()),
                None => std::env::current_dir().ok(),
            };
            let phase = Phase::start("enter");
            let entered = container::enter(prepared, cwd).map_err(|e| PluginError::OnNode {
                node: node_name(),
                message: error_chain(&e),
            })?;
            phase.done(spank.job_id().unwrap_or(0), spank.step_id().unwrap_or(0));
            if let (Some(w), Some(_)) = (workdir, &entered.cwd_fallback_from) {
                // An explicit directory that is not there is an error, not a hint.
                return Err(PluginError::OnNode {
                    node: node_name(),
                    message: format!(
                        "--container-workdir={}: no such directory in the container",
                        w.display()
                    ),
                });
            }
            if let (Some(e), Ok(0)) = (&prepared.sshd_error, spank.task_id()) {
                spank_sys::log::user(&format!(
                    "shifter: no sshd on {}: {}",
                    node_name(),
                    e.trim_start_matches("shifter: ")
                ));
            }
            if let Some(from) = &entered.cwd_fallback_from {
                if spank.node_id().unwrap_or(0) == 0 && spank.task_id().unwrap_or(0) == 0 {
                    spank_sys::log::user(&format!(
                        "shifter: {} does not exist in the image; starting in {}",
                        from.display(),
                        entered.cwd.display()
                    ));
                }
            }
            entered.cwd
        }
    };
    st.task_workdir = Some(workdir);
    Ok(())
}

/// A task that outlives a `kill -9`ed slurmstepd keeps the step's mount
/// namespace, and with it the squashfs mount and loop device, alive on the node
/// (proctrack/linuxproc cannot find it once slurmstepd is gone). Slurm forks
/// tasks from slurmstepd's main thread, so a parent-death signal fires only
/// when slurmstepd itself dies. Set here, as the user, because prctl(2) clears
/// it when Slurm changes the task's credentials after task_init_privileged.
fn die_with_slurmstepd() -> Result<(), PluginError> {
    let parent = nix::unistd::getppid();
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| {
        PluginError::OnNode {
            node: node_name(),
            message: format!("cannot tie the task to slurmstepd (prctl PR_SET_PDEATHSIG): {e}"),
        }
    })?;
    // slurmstepd died before the signal was armed: the signal never comes.
    if nix::unistd::getppid() != parent || parent.as_raw() == 1 {
        return Err(PluginError::OnNode {
            node: node_name(),
            message: "slurmstepd exited while the task was starting".into(),
        });
    }
    Ok(())
}

pub fn task_init(spank: &Spank) -> Result<(), PluginError> {
    let st = state::lock();
    let (image, request) = match &st.step {
        None | Some(StepPlan::Failed(_)) => return Ok(()),
        Some(StepPlan::Host { image, request }) => (image, request),
        Some(StepPlan::Container {
            image,
            request,
            prepared,
            ..
        }) => {
            let phase = Phase::start("task env");
            container::verify(prepared)?;
            die_with_slurmstepd()?;
            // Slurm chdirs to the submit directory after task_init_privileged,
            // which inside the container may not exist (it then falls back to
            // /tmp): go where the runtime decided.
            if let Some(dir) = &st.task_workdir {
                if let Err(e) = std::env::set_current_dir(dir) {
                    // An image WORKDIR the user may not enter (e.g. /root).
                    let first =
                        spank.node_id().unwrap_or(0) == 0 && spank.task_id().unwrap_or(0) == 0;
                    first.then(|| {
                        spank_sys::log::user(&format!(
                            "shifter: cannot enter {} in the image ({e}); starting in /",
                            dir.display()
                        ))
                    });
                    std::env::set_current_dir("/").map_err(|e| PluginError::OnNode {
                        node: node_name(),
                        message: format!("cannot change to / in the container: {e}"),
                    })?;
                }
            }
            let current = spank.job_env()?;
            apply_env(
                spank,
                &current,
                &container::environment(prepared, &current)?,
            )?;
            phase.done(spank.job_id().unwrap_or(0), spank.step_id().unwrap_or(0));
            (image, request)
        }
    };
    // Read by nested srun (which pins the same image) and by `shifter` in the
    // batch script.
    spank.setenv(ENV_IMAGE, &format!("id:{image}"), true)?;
    spank.setenv(ENV_IMAGE_REQUEST, request, true)?;
    Ok(())
}

/// Makes the task's environment equal to `wanted` with set/unset calls.
fn apply_env(spank: &Spank, current: &[String], wanted: &[String]) -> Result<(), PluginError> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_owned();
    let wanted_keys: std::collections::BTreeSet<String> = wanted.iter().map(|kv| key(kv)).collect();
    for kv in current {
        let k = key(kv);
        if !wanted_keys.contains(&k) {
            spank.unsetenv(&k)?;
        }
    }
    for kv in wanted {
        if current.contains(kv) {
            continue;
        }
        if let Some((k, v)) = kv.split_once('=') {
            spank.setenv(k, v, true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex() -> String {
        "cd".repeat(32)
    }

    #[test]
    fn a_step_without_image_or_option_is_left_alone() {
        assert_eq!(
            choose(&Pinned::default(), &RawOptions::default()).unwrap(),
            None
        );
    }

    #[test]
    fn the_pinned_environment_wins_over_the_forwarded_option() {
        let pinned = Pinned {
            image: Some(format!("id:{}", hex())),
            volumes: Some("/a:/b".into()),
            modules: Some("none".into()),
            request: Some("busybox:1".into()),
            workdir: Some("/work".into()),
        };
        let opts = RawOptions {
            image: Some("busybox:1".into()),
            volumes: vec!["/x:/y".into()],
            ..RawOptions::default()
        };
        let c = choose(&pinned, &opts).unwrap().unwrap();
        assert_eq!(c.image.as_str(), hex());
        assert_eq!(c.volumes, "/a:/b");
        assert_eq!(c.modules.as_deref(), Some("none"));
        assert_eq!(c.request, "busybox:1");
        assert_eq!(c.workdir.as_deref(), Some("/work"));
    }

    #[test]
    fn a_forwarded_id_without_pin_is_used_so_the_node_can_enforce_the_acl() {
        let opts = RawOptions {
            image: Some(format!("id:{}", hex())),
            volumes: vec!["/a:/b".into(), "/c:/d".into()],
            ..RawOptions::default()
        };
        let c = choose(&Pinned::default(), &opts).unwrap().unwrap();
        assert_eq!(c.volumes, "/a:/b;/c:/d");
    }

    #[test]
    fn an_unresolved_tag_on_the_node_is_refused() {
        let opts = RawOptions {
            image: Some("busybox:latest".into()),
            ..RawOptions::default()
        };
        let e = choose(&Pinned::default(), &opts).unwrap_err();
        assert!(
            e.to_string().contains("without being resolved at submit"),
            "{e}"
        );
    }
}
