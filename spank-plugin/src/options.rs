//! `--image`, `--volume`, `--module`: registered with `spank_option_register`
//! in `slurm_spank_init` (local, remote and allocator contexts; sbatch ignores
//! a static table). The callback records each value; on the submit side it
//! also validates it at once, so srun/sbatch refuse a bad value before anything
//! is queued.

use shifter_api::ImageType;
use spank_sys::{BoxError, OptionSpec, Spank, SpankError};

use crate::error::PluginError;
use crate::request;
use crate::state;
use crate::volume;

pub const IMAGE: OptionSpec = OptionSpec {
    name: "image",
    arginfo: Some("REF"),
    usage: "Run the step's tasks in container image REF (docker:repo:tag, id:<hex> or custom:name; default $SHIFTER_IMAGE). Pull it first with `shifterimg pull`.",
};

pub const VOLUME: OptionSpec = OptionSpec {
    name: "volume",
    arginfo: Some("SRC:DST[:ro]"),
    usage: "Bind host path SRC at DST in the container; repeatable, or ';'-separated (default $SHIFTER_VOLUME).",
};

pub const MODULE: OptionSpec = OptionSpec {
    name: "module",
    arginfo: Some("a,b|none"),
    usage: "Site modules to enable in the container, or none (default $SHIFTER_MODULE, else the site's defaults).",
};

/// What Slurm names the environment variable that forwards `--image` to the
/// nodes (`_SLURM_SPANK_OPTION_<plugin>_<option>`).
pub const SLURM_IMAGE_OPTION_ENV: &str = "_SLURM_SPANK_OPTION_shifter_image";

pub fn register(spank: &Spank) -> Result<(), SpankError> {
    for spec in [IMAGE, VOLUME, MODULE] {
        spank.register_option(&spec, on_option)?;
    }
    Ok(())
}

fn on_option(name: &str, value: Option<&str>, remote: bool) -> Result<(), BoxError> {
    let value = value.unwrap_or("").to_owned();
    let mut st = state::lock();
    if !remote {
        validate(&mut st, name, &value)?;
    }
    match name {
        "image" => st.opts.image = Some(value),
        "volume" => st.opts.volumes.push(value),
        "module" => st.opts.module = Some(value),
        _ => {}
    }
    Ok(())
}

fn validate(st: &mut state::State, name: &str, value: &str) -> Result<(), PluginError> {
    match name {
        "image" => {
            let cfg = st.config()?;
            let ty = ImageType::parse(&cfg.default_image_type).unwrap_or(ImageType::Docker);
            request::parse_image("--image", value, ty)?;
        }
        "volume" => {
            let cfg = st.config()?;
            volume::check("--volume", value, Some(cfg))?;
        }
        "module" => {
            let cfg = st.config()?;
            request::parse_modules("--module", value, Some(cfg))?;
        }
        _ => {}
    }
    Ok(())
}
