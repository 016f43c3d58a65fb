//! srun, sbatch and salloc: validate the request and resolve it to an image id
//! once, on the submit host, then pin that id in the environment the job and
//! every nested srun inherit.

use shifter_api::{ImageId, ImageType};
use spank_sys::Spank;

use crate::error::PluginError;
use crate::options::{SLURM_CONTAINER_IMAGE_OPTION_ENV, SLURM_IMAGE_OPTION_ENV};
use crate::request::{
    self, Request, ENV_IMAGE, ENV_IMAGE_REQUEST, ENV_MODULE, ENV_VOLUME, ENV_WORKDIR,
};
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
    // srun raises its log level (-v) only after this callback, and the job
    // id is not known yet: srun logs the timing in local_user_init.
    st.resolve_time = Some(phase.stop());
    tracing::debug!("shifter: {} resolved to id:{id}", req.image_text);
    pin(&req, &id, st.opts.image.is_some());
    if st.opts.image.is_some() {
        // Slurm also keeps the raw --image in the job's spank environment and
        // hands it to every srun of the job as SLURM_SPANK_<option> (its way
        // of setting an option from the environment): pin that copy too, or
        // a nested srun would resolve the tag again.
        let option_env = if st.opts.image_via_alias {
            SLURM_CONTAINER_IMAGE_OPTION_ENV
        } else {
            SLURM_IMAGE_OPTION_ENV
        };
        if let Err(e) = spank.job_control_setenv(option_env, &format!("id:{id}")) {
            tracing::debug!("shifter: cannot pin the job's spank environment: {e}");
        }
    }
    Ok(())
}

/// srun, after the allocation: log the submit-side timing with the job and
/// step ids (`srun -vv` shows it).
pub fn local_user_init(spank: &Spank) -> Result<(), PluginError> {
    if let Some((phase, took)) = state::lock().resolve_time.take() {
        crate::timing::log(spank.job_id()?, spank.step_id()?, phase, took);
    }
    Ok(())
}

/// Writes the resolved request into this process's environment, which Slurm
/// copies into the job (sbatch, salloc's shell) or the step (srun).
fn pin(req: &Request, id: &ImageId, from_option: bool) {
    let env = |k: &str| std::env::var(k).ok();
    for (key, value) in pin_env(req, id, from_option, &env) {
        match value {
            Some(v) => std::env::set_var(key, v),
            None => std::env::remove_var(key),
        }
    }
}

/// The environment edits that pin a resolved request: `Some` sets, `None`
/// removes. `env` reads the current environment.
pub fn pin_env(
    req: &Request,
    id: &ImageId,
    from_option: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(&'static str, Option<String>)> {
    let pinned = format!("id:{id}");
    let mut edits = vec![(ENV_IMAGE, Some(pinned.clone()))];
    // A nested srun re-pins an already pinned id: keep the user's original words.
    let keep_request = !from_option && req.image_text == pinned && env(ENV_IMAGE_REQUEST).is_some();
    if !keep_request {
        edits.push((ENV_IMAGE_REQUEST, Some(req.image_text.clone())));
    }
    for option_env in [SLURM_IMAGE_OPTION_ENV, SLURM_CONTAINER_IMAGE_OPTION_ENV] {
        if env(option_env).is_some() {
            edits.push((option_env, Some(pinned.clone())));
        }
    }
    edits.push((
        ENV_VOLUME,
        (!req.volumes.is_empty()).then(|| req.volume_env()),
    ));
    edits.push((ENV_MODULE, req.module_env()));
    edits.push((
        ENV_WORKDIR,
        req.workdir.as_ref().map(|w| w.display().to_string()),
    ));
    edits
}

#[cfg(test)]
mod tests {
    use shifter_api::ImageRef;

    use super::*;

    fn id() -> ImageId {
        ImageId::parse(&"ab".repeat(32)).unwrap()
    }

    fn req(text: &str, volumes: &[&str], modules: Option<Vec<String>>) -> Request {
        Request {
            image: ImageRef::parse(text).unwrap(),
            image_text: text.to_owned(),
            volumes: volumes.iter().map(|s| s.to_string()).collect(),
            modules,
            workdir: None,
        }
    }

    fn get<'a>(
        edits: &'a [(&'static str, Option<String>)],
        key: &str,
    ) -> Option<&'a Option<String>> {
        edits.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    #[test]
    fn a_tag_is_pinned_to_its_id_and_the_request_kept_for_the_user() {
        let e = pin_env(&req("busybox:1", &[], None), &id(), true, &|_| None);
        assert_eq!(
            get(&e, ENV_IMAGE),
            Some(&Some(format!("id:{}", "ab".repeat(32))))
        );
        assert_eq!(
            get(&e, ENV_IMAGE_REQUEST),
            Some(&Some("busybox:1".to_owned()))
        );
        assert_eq!(
            get(&e, ENV_VOLUME),
            Some(&None),
            "stale SHIFTER_VOLUME must be removed"
        );
        assert_eq!(get(&e, ENV_MODULE), Some(&None));
        assert_eq!(
            get(&e, SLURM_IMAGE_OPTION_ENV),
            None,
            "only overwritten when Slurm set it"
        );
    }

    #[test]
    fn slurms_forwarded_option_is_overwritten_with_the_id() {
        let env = |k: &str| (k == SLURM_IMAGE_OPTION_ENV).then(|| "busybox:1".to_owned());
        let e = pin_env(&req("busybox:1", &[], None), &id(), true, &env);
        assert_eq!(
            get(&e, SLURM_IMAGE_OPTION_ENV),
            Some(&Some(format!("id:{}", "ab".repeat(32))))
        );
    }

    #[test]
    fn nested_srun_keeps_the_original_request_of_the_job() {
        let pinned = format!("id:{}", "ab".repeat(32));
        let env = |k: &str| (k == ENV_IMAGE_REQUEST).then(|| "docker:busybox:1".to_owned());
        let e = pin_env(&req(&pinned, &[], None), &id(), false, &env);
        assert_eq!(get(&e, ENV_IMAGE_REQUEST), None, "{e:?}");
    }

    #[test]
    fn volumes_and_modules_travel_with_the_pin() {
        let e = pin_env(
            &req("busybox", &["/a:/b", "/c:/d:ro"], Some(vec![])),
            &id(),
            true,
            &|_| None,
        );
        assert_eq!(
            get(&e, ENV_VOLUME),
            Some(&Some("/a:/b;/c:/d:ro".to_owned()))
        );
        assert_eq!(get(&e, ENV_MODULE), Some(&Some("none".to_owned())));
    }

    #[test]
    fn container_workdir_and_the_container_image_option_copy_are_pinned() {
        let mut r = req("busybox", &[], None);
        r.workdir = Some("/work".into());
        let env = |k: &str| (k == SLURM_CONTAINER_IMAGE_OPTION_ENV).then(|| "busybox".to_owned());
        let e = pin_env(&r, &id(), true, &env);
        assert_eq!(get(&e, ENV_WORKDIR), Some(&Some("/work".to_owned())));
        assert_eq!(
            get(&e, SLURM_CONTAINER_IMAGE_OPTION_ENV),
            Some(&Some(format!("id:{}", "ab".repeat(32))))
        );
        let e = pin_env(&req("busybox", &[], None), &id(), true, &|_| None);
        assert_eq!(get(&e, ENV_WORKDIR), Some(&None), "stale workdir removed");
    }
}
