//! What the user asked for: `--image`, `--volume` (repeatable), `--module`,
//! `--container-workdir` (and the pyxis spellings of the first two), each
//! falling back to its environment default (`SHIFTER_IMAGE`, `SHIFTER_VOLUME`,
//! `SHIFTER_MODULE`, `SHIFTER_WORKDIR`). Validation happens here, on the submit host, so a bad
//! value fails before the job is queued with a message naming the option.

use runtime_core::Config;
use shifter_api::{ImageRef, ImageType, RefError};
use thiserror::Error;

use crate::pyxis::{self, AliasError};
use crate::volume::{self, VolumeError};

pub const ENV_IMAGE: &str = "SHIFTER_IMAGE";
pub const ENV_VOLUME: &str = "SHIFTER_VOLUME";
pub const ENV_MODULE: &str = "SHIFTER_MODULE";
/// `--container-workdir`, pinned for the nodes and nested sruns.
pub const ENV_WORKDIR: &str = "SHIFTER_WORKDIR";
/// The reference as the user wrote it, beside the pinned `id:` in `SHIFTER_IMAGE`.
pub const ENV_IMAGE_REQUEST: &str = "SHIFTER_IMAGEREQUEST";

#[derive(Debug, Error)]
pub enum RequestError {
    #[error("{origin}={value:?}: {source}")]
    Image {
        origin: &'static str,
        value: String,
        #[source]
        source: RefError,
    },
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("{origin}={value:?}: {why}")]
    Module {
        origin: &'static str,
        value: String,
        why: String,
    },
    #[error(transparent)]
    Alias(#[from] AliasError),
    #[error("{first_option}={first:?} and {second_option}={second:?} disagree: give one of them")]
    BothImages {
        first_option: &'static str,
        first: String,
        second_option: &'static str,
        second: String,
    },
    #[error("{option} was given without --image: add --image=REF (e.g. --image=docker:ubuntu:24.04) or drop {option}")]
    WithoutImage { option: &'static str },
}

/// The raw option values as Slurm handed them to the option callbacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOptions {
    pub image: Option<String>,
    /// One entry per `--volume` occurrence (each may hold `;`-separated volumes).
    pub volumes: Vec<String>,
    pub module: Option<String>,
    /// The image came as `--container-image` (so errors name that option).
    pub image_via_alias: bool,
    /// `--container-workdir`.
    pub workdir: Option<String>,
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub image: ImageRef,
    /// The reference as written (before resolution), for `SHIFTER_IMAGEREQUEST`.
    pub image_text: String,
    /// Individual `SOURCE:DEST[:flags]` volumes.
    pub volumes: Vec<String>,
    /// `None`: the site's default modules; `Some([])`: `--module=none`.
    pub modules: Option<Vec<String>>,
    /// Where tasks start in the container (`--container-workdir`).
    pub workdir: Option<std::path::PathBuf>,
}

impl Request {
    /// `--volume` values as one string, the form `SHIFTER_VOLUME` takes.
    pub fn volume_env(&self) -> String {
        self.volumes.join(";")
    }

    /// `--module` as `SHIFTER_MODULE` takes it.
    pub fn module_env(&self) -> Option<String> {
        self.modules.as_ref().map(|m| {
            if m.is_empty() {
                "none".to_owned()
            } else {
                m.join(",")
            }
        })
    }
}

pub fn parse_image(
    origin: &'static str,
    value: &str,
    default_type: ImageType,
) -> Result<ImageRef, RequestError> {
    ImageRef::parse_with_default(value, default_type).map_err(|source| RequestError::Image {
        origin,
        value: value.to_owned(),
        source,
    })
}

/// `a,b` or `none`; names are checked against the site's modules when the
/// config is known.
pub fn parse_modules(
    origin: &'static str,
    value: &str,
    cfg: Option<&Config>,
) -> Result<Vec<String>, RequestError> {
    let bad = |why: String| RequestError::Module {
        origin,
        value: value.to_owned(),
        why,
    };
    let names = runtime_core::config::parse_module_list(value).map_err(bad)?;
    if names.is_empty() {
        return Ok(names);
    }
    if let Some(cfg) = cfg {
        cfg.resolve_modules(Some(&names)).map_err(bad)?;
    }
    Ok(names)
}

/// Builds the request from option values, falling back to the environment.
/// `Ok(None)`: no image asked for, the plugin stays out of the way.
pub fn build(
    opts: &RawOptions,
    env: &dyn Fn(&str) -> Option<String>,
    default_type: ImageType,
    cfg: Option<&Config>,
) -> Result<Option<Request>, RequestError> {
    let (image_origin, image_text) = match (&opts.image, env(ENV_IMAGE)) {
        (Some(v), _) if opts.image_via_alias => ("--container-image", v.clone()),
        (Some(v), _) => ("--image", v.clone()),
        (None, Some(v)) if !v.trim().is_empty() => (ENV_IMAGE, v),
        _ => {
            // Leftover SHIFTER_VOLUME/SHIFTER_MODULE without an image are ignored;
            // options given on this command line without --image are a mistake.
            if !opts.volumes.is_empty() {
                return Err(RequestError::WithoutImage { option: "--volume" });
            }
            if opts.module.is_some() {
                return Err(RequestError::WithoutImage { option: "--module" });
            }
            if opts.workdir.is_some() {
                return Err(RequestError::WithoutImage {
                    option: pyxis::CONTAINER_WORKDIR,
                });
            }
            return Ok(None);
        }
    };
    let image = parse_image(image_origin, &image_text, default_type)?;
    let volumes = if opts.volumes.is_empty() {
        match env(ENV_VOLUME) {
            Some(v) => volume::check(ENV_VOLUME, &v, cfg)?,
            None => Vec::new(),
        }
    } else {
        let mut all = Vec::new();
        for v in &opts.volumes {
            all.extend(volume::check("--volume", v, cfg)?);
        }
        all
    };
    let modules = match (&opts.module, env(ENV_MODULE)) {
        (Some(m), _) => Some(parse_modules("--module", m, cfg)?),
        (None, Some(m)) if !m.trim().is_empty() => Some(parse_modules(ENV_MODULE, &m, cfg)?),
        _ => None,
    };
    let workdir = match (&opts.workdir, env(ENV_WORKDIR)) {
        (Some(w), _) => Some(pyxis::workdir(pyxis::CONTAINER_WORKDIR, w)?),
        (None, Some(w)) if !w.trim().is_empty() => Some(pyxis::workdir(ENV_WORKDIR, &w)?),
        _ => None,
    };
    Ok(Some(Request {
        image,
        image_text,
        volumes,
        modules,
        workdir,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn opts(image: Option<&str>, volumes: &[&str], module: Option<&str>) -> RawOptions {
        RawOptions {
            image: image.map(str::to_owned),
            volumes: volumes.iter().map(|s| s.to_string()).collect(),
            module: module.map(str::to_owned),
            ..RawOptions::default()
        }
    }

    fn cfg() -> Config {
        Config::parse(
            "system = \"tb\"\nimage_dir = \"/images\"\n[modules.gpu]\n[modules.mpi]\n",
            std::path::Path::new("test.toml"),
        )
        .unwrap()
    }

    #[test]
    fn nothing_asked_means_no_request() {
        let r = build(
            &RawOptions::default(),
            &env_of(&[]),
            ImageType::Docker,
            None,
        )
        .unwrap();
        assert_eq!(r, None);
    }

    #[test]
    fn leftover_env_volume_without_image_is_ignored() {
        let r = build(
            &RawOptions::default(),
            &env_of(&[(ENV_VOLUME, "/a:/b")]),
            ImageType::Docker,
            None,
        )
        .unwrap();
        assert_eq!(r, None);
    }

    #[test]
    fn volume_option_without_image_is_refused_with_the_fix() {
        let e = build(
            &opts(None, &["/a:/b"], None),
            &env_of(&[]),
            ImageType::Docker,
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("--volume was given without --image"),
            "{e}"
        );
    }

    #[test]
    fn option_wins_over_environment_default() {
        let r = build(
            &opts(Some("busybox:latest"), &[], None),
            &env_of(&[(ENV_IMAGE, "ubuntu:24.04")]),
            ImageType::Docker,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.image_text, "busybox:latest");
        assert_eq!(
            r.image.to_string(),
            "docker:docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn environment_defaults_fill_every_option() {
        let r = build(
            &RawOptions::default(),
            &env_of(&[
                (ENV_IMAGE, "busybox"),
                (ENV_VOLUME, "/a:/b;/c:/d:ro"),
                (ENV_MODULE, "none"),
            ]),
            ImageType::Docker,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.volumes, vec!["/a:/b", "/c:/d:ro"]);
        assert_eq!(r.modules, Some(vec![]));
        assert_eq!(r.module_env().as_deref(), Some("none"));
    }

    #[test]
    fn repeated_volume_options_accumulate() {
        let r = build(
            &opts(Some("busybox"), &["/a:/b", "/c:/d;/e:/f"], None),
            &env_of(&[]),
            ImageType::Docker,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.volume_env(), "/a:/b;/c:/d;/e:/f");
    }

    #[test]
    fn bad_image_names_the_option_and_the_value() {
        let e = build(
            &opts(Some("Ubuntu:Latest"), &[], None),
            &env_of(&[]),
            ImageType::Docker,
            None,
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("--image=\"Ubuntu:Latest\""), "{msg}");
        let e = build(
            &RawOptions::default(),
            &env_of(&[(ENV_IMAGE, "id:xyz")]),
            ImageType::Docker,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("SHIFTER_IMAGE=\"id:xyz\""), "{e}");
    }

    #[test]
    fn unknown_module_lists_the_available_ones() {
        let e = parse_modules("--module", "gpu,cuda", Some(&cfg())).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("unknown module \"cuda\""), "{msg}");
        assert!(msg.contains("gpu") && msg.contains("mpi"), "{msg}");
        assert_eq!(
            parse_modules("--module", "gpu, mpi", Some(&cfg())).unwrap(),
            vec!["gpu", "mpi"]
        );
    }

    #[test]
    fn none_cannot_be_mixed_with_modules() {
        assert!(parse_modules("--module", "none,gpu", None).is_err());
        assert!(parse_modules("--module", ",", None).is_err());
    }

    #[test]
    fn custom_default_type_applies_to_untyped_references() {
        let r = build(
            &opts(Some("site-image"), &[], None),
            &env_of(&[]),
            ImageType::Custom,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.image, ImageRef::Custom("site-image".into()));
    }

    #[test]
    fn container_image_is_the_same_request_as_image_and_errors_name_it() {
        let mut o = opts(Some("busybox:latest"), &[], None);
        o.image_via_alias = true;
        let r = build(&o, &env_of(&[]), ImageType::Docker, None)
            .unwrap()
            .unwrap();
        assert_eq!(
            r.image.to_string(),
            "docker:docker.io/library/busybox:latest"
        );
        o.image = Some("Bad:Ref".into());
        let e = build(&o, &env_of(&[]), ImageType::Docker, None).unwrap_err();
        assert!(e.to_string().starts_with("--container-image="), "{e}");
    }

    #[test]
    fn container_workdir_travels_with_the_request_and_falls_back_to_the_env() {
        let mut o = opts(Some("busybox"), &[], None);
        o.workdir = Some("/work".into());
        let r = build(&o, &env_of(&[]), ImageType::Docker, None)
            .unwrap()
            .unwrap();
        assert_eq!(r.workdir, Some("/work".into()));
        let r = build(
            &opts(Some("busybox"), &[], None),
            &env_of(&[(ENV_WORKDIR, "/srv")]),
            ImageType::Docker,
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.workdir, Some("/srv".into()));
        o.workdir = Some("rel".into());
        let e = build(&o, &env_of(&[]), ImageType::Docker, None).unwrap_err();
        assert!(e.to_string().starts_with("--container-workdir="), "{e}");
    }

    #[test]
    fn container_workdir_without_image_is_refused() {
        let o = RawOptions {
            workdir: Some("/work".into()),
            ..RawOptions::default()
        };
        let e = build(&o, &env_of(&[]), ImageType::Docker, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("--container-workdir was given without --image"),
            "{e}"
        );
    }
}
