//! The plugin's per-process state. Slurm's callbacks carry no user data, and
//! the option callbacks not even the handle, so what one callback learns for a
//! later one lives here. Each Slurm process (srun, sbatch, slurmstepd) loads
//! its own copy of the plugin, so this is per command or per step.

use std::sync::{Mutex, MutexGuard};

use runtime_core::Config;

use crate::args::PluginArgs;
use crate::error::PluginError;
use crate::remote::StepPlan;
use crate::request::RawOptions;

#[derive(Debug, Default)]
pub struct State {
    pub args: PluginArgs,
    config: Option<Config>,
    pub opts: RawOptions,
    /// What the node does for this step (remote context only).
    pub step: Option<StepPlan>,
    /// How long resolving took on the submit side, logged once ids are known.
    pub resolve_time: Option<(&'static str, std::time::Duration)>,
    /// The task's working directory in the container (task callbacks only).
    pub task_workdir: Option<std::path::PathBuf>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

/// The state, created on first use. A poisoned lock (a panic in an earlier
/// callback, already reported) still holds usable data.
pub fn lock() -> MutexGuardState {
    let mut g = STATE.lock().unwrap_or_else(|p| p.into_inner());
    if g.is_none() {
        *g = Some(State::default());
    }
    MutexGuardState(g)
}

pub struct MutexGuardState(MutexGuard<'static, Option<State>>);

impl std::ops::Deref for MutexGuardState {
    type Target = State;
    fn deref(&self) -> &State {
        self.0.as_ref().expect("initialised in lock()")
    }
}

impl std::ops::DerefMut for MutexGuardState {
    fn deref_mut(&mut self) -> &mut State {
        self.0.as_mut().expect("initialised in lock()")
    }
}

impl State {
    /// Resets everything for a new plugin stack (Slurm calls `init` once per load).
    pub fn reset(&mut self, args: PluginArgs) {
        *self = State {
            args,
            ..State::default()
        };
    }

    /// The site config, read (and trust-checked) on first use only: a plain
    /// `srun` without `--image` never touches it.
    pub fn config(&mut self) -> Result<&Config, PluginError> {
        if self.config.is_none() {
            let cfg = Config::load(&self.args.config)?;
            self.config = Some(cfg);
        }
        Ok(self.config.as_ref().expect("just loaded"))
    }
}
