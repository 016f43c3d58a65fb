//! `--image`, `--volume`, `--module` and the pyxis-style aliases
//! `--container-image`, `--container-mounts`, `--container-workdir`: registered with `spank_option_register`
//! in `slurm_spank_init` (local, remote and allocator contexts; sbatch ignores
//! a static table). The callback records each value; on the submit side it
//! also validates it at once, so srun/sbatch refuse a bad value before anything
//! is queued.

use shifter_api::ImageType;
use spank_sys::{BoxError, OptionSpec, Spank, SpankError};

use crate::error::PluginError;
use crate::pyxis;
use crate::request::{self, RequestError};
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

pub const CONTAINER_IMAGE: OptionSpec = OptionSpec {
    name: "container-image",
    arginfo: Some("REF"),
    usage: "Alias of --image (pyxis/enroot spelling): run the step's tasks in container image REF.",
};

pub const CONTAINER_MOUNTS: OptionSpec = OptionSpec {
    name: "container-mounts",
    arginfo: Some("SRC:DST[:ro],..."),
    usage: "Alias of --volume (pyxis/enroot spelling): bind host paths into the container, several separated by ','.",
};

pub const CONTAINER_WORKDIR: OptionSpec = OptionSpec {
    name: "container-workdir",
    arginfo: Some("DIR"),
    usage: "Start the tasks in directory DIR inside the container (pyxis/enroot spelling; default: the submit directory if the image has it, else the image's WORKDIR).",
};

/// What Slurm names the environment variable that forwards `--image` to the
/// nodes (`_SLURM_SPANK_OPTION_<plugin>_<option>`).
pub const SLURM_IMAGE_OPTION_ENV: &str = "_SLURM_SPANK_OPTION_shifter_image";
/// The same for `--container-image` (Slurm turns the `-` into `_`).
pub const SLURM_CONTAINER_IMAGE_OPTION_ENV: &str = "_SLURM_SPANK_OPTION_shifter_container_image";

pub fn register(spank: &Spank) -> Result<(), SpankError> {
    for spec in [
        IMAGE,
        VOLUME,
        MODULE,
        CONTAINER_IMAGE,
        CONTAINER_MOUNTS,
        CONTAINER_WORKDIR,
    ] {
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
        "image" | "container-image" => {
            let alias = name == "container-image";
            // Both spellings at once is a mistake only if they disagree.
            if let Some(prev) = &st.opts.image {
                if st.opts.image_via_alias != alias && *prev != value {
                    let (first_option, second_option) = if alias {
                        ("--image", "--container-image")
                    } else {
                        ("--container-image", "--image")
                    };
                    return Err(Box::new(PluginError::from(RequestError::BothImages {
                        first_option,
                        first: prev.clone(),
                        second_option,
                        second: value,
                    })));
                }
            }
            st.opts.image = Some(value);
            st.opts.image_via_alias = alias;
        }
        "volume" => st.opts.volumes.push(value),
        "container-mounts" => st
            .opts
            .volumes
            .push(pyxis::mounts_to_volumes(&value).map_err(PluginError::from)?),
        "module" => st.opts.module = Some(value),
        "container-workdir" => st.opts.workdir = Some(value),
        _ => {}
    }
    Ok(())
}

fn validate(st: &mut state::State, name: &str, value: &str) -> Result<(), PluginError> {
    match name {
        "image" | "container-image" => {
            let origin = if name == "image" {
                "--image"
            } else {
                "--container-image"
            };
            let cfg = st.config()?;
            let ty = ImageType::parse(&cfg.default_image_type).unwrap_or(ImageType::Docker);
            request::parse_image(origin, value, ty)?;
        }
        "container-mounts" => {
            let volumes = pyxis::mounts_to_volumes(value)?;
            let cfg = st.config()?;
            volume::check(pyxis::CONTAINER_MOUNTS, &volumes, Some(cfg))?;
        }
        "container-workdir" => {
            pyxis::workdir(pyxis::CONTAINER_WORKDIR, value)?;
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
