//! srun, sbatch and salloc: validate the request and resolve it to an image id
//! once, on the submit host, then pin that id in the environment the job and
//! every nested srun inherit.

use shifter_api::{ImageId, ImageType};
use spank_sys::Spank;

use crate::error::PluginError;
use crate::options::SLURM_IMAGE_OPTION_ENV;
use crate::request::{self, Request, ENV_IMAGE, ENV_IMAGE_REQUEST, ENV_MODULE, ENV_VOLUME};
use crate::resolve::resolve;
use crate::state;
use crate::timing::Phase;

pub fn init_post_opt(spank: &Spank) -> Result<(), PluginError> {
    let mut st = state::lock();
    let env = |k: &str| std::env::var(k).ok();
    let wants_image =
        st.opts.image.is_some() || env(ENV_IMAGE).is_some_and(|v| !v.trim().is_empty());
    let cfg = if wants_image {
        Some(st.config()?.clone())
    } else {
        None
    };
    let default_type = cfg
        .as_ref()
        .and_then(|c| ImageType::parse(&c.default_image_type))
        .unwrap_or(ImageType::Docker);
    let Some(req) = request::build(&st.opts, &env, default_type, cfg.as_ref())? else {
        return Ok(());
    };
    let cfg = cfg.expect("a request implies the config was loaded");
    let phase = Phase::start("resolve");
    let id = resolve(&cfg, &req.image)?;
    // sbatch/salloc have no job id yet; srun inside an allocation has one.
    phase.done(spank.job_id().unwrap_or(0), spank.step_id().unwrap_or(0));
    tracing::debug!("shifter: {} resolved to id:{id}", req.image_text);
    pin(&req, &id, st.opts.image.is_some());
    if st.opts.image.is_some() {
        // Slurm also keeps the raw --image in the job's spank environment and
        // hands it to every srun of the job as SLURM_SPANK_<option> (its way
        // of setting an option from the environment): pin that copy too, or
        // a nested srun would resolve the tag again.
        if let Err(e) = spank.job_control_setenv(SLURM_IMAGE_OPTION_ENV, &format!("id:{id}")) {
            tracing::debug!("shifter: cannot pin the job's spank environment: {e}");
        }
    }
    Ok(())
}

/// Writes the resolved request into this process's environment, which Slurm
/// copies into the job (sbatch, salloc's shell) or the step (srun).
fn pin(req: &Request, id: &ImageId, from_option: bool) {
    let pinned = format!("id:{id}");
    // A nested srun re-pins an already pinned id: keep the user's original words.
    let keep_request =
        !from_option && req.image_text == pinned && std::env::var_os(ENV_IMAGE_REQUEST).is_some();
    if !keep_request {
        std::env::set_var(ENV_IMAGE_REQUEST, &req.image_text);
    }
    std::env::set_var(ENV_IMAGE, &pinned);
    if std::env::var_os(SLURM_IMAGE_OPTION_ENV).is_some() {
        std::env::set_var(SLURM_IMAGE_OPTION_ENV, &pinned);
    }
    match req.volumes.is_empty() {
        true => std::env::remove_var(ENV_VOLUME),
        false => std::env::set_var(ENV_VOLUME, req.volume_env()),
    }
    match req.module_env() {
        Some(m) => std::env::set_var(ENV_MODULE, m),
        None => std::env::remove_var(ENV_MODULE),
    }
}
