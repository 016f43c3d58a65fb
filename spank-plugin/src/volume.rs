//! Submit-time check of `--volume` / `SHIFTER_VOLUME`, with runtime-core's own
//! parser and destination policy, so a typo or a forbidden destination fails
//! in srun/sbatch before the job waits in the queue. The node checks again
//! (and opens the sources as the user); this only catches what can be known
//! on the submit host.

use runtime_core::volume::DestinationPolicy;
use runtime_core::{Config, Volume};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("{origin}={value:?}: {source}")]
pub struct VolumeError {
    origin: &'static str,
    value: String,
    #[source]
    source: runtime_core::VolumeError,
}

/// Splits one option value on `;`, checks each volume (and, with the site
/// config, its destination), and returns the individual specs.
pub fn check(
    origin: &'static str,
    value: &str,
    cfg: Option<&Config>,
) -> Result<Vec<String>, VolumeError> {
    let bad = |source| VolumeError {
        origin,
        value: value.to_owned(),
        source,
    };
    let parsed = Volume::parse_all(&[value]).map_err(bad)?;
    if let Some(cfg) = cfg {
        let policy = DestinationPolicy::new(cfg);
        for v in &parsed {
            policy.check_volume(v).map_err(bad)?;
        }
    }
    Ok(value
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            "system = \"tb\"\nimage_dir = \"/images\"\nforbidden_destinations = [\"/site\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn several_volumes_split_on_semicolons() {
        let v = check("--volume", "/a:/data;/b:/scratch:ro; ", Some(&cfg())).unwrap();
        assert_eq!(v, vec!["/a:/data", "/b:/scratch:ro"]);
    }

    #[test]
    fn missing_destination_names_the_option_and_the_expected_form() {
        let e = check("--volume", "/scratch", None).unwrap_err().to_string();
        assert!(e.starts_with("--volume=\"/scratch\": "), "{e}");
        assert!(e.contains("/host/path:/container/path[:ro]"), "{e}");
    }

    #[test]
    fn relative_source_is_refused_from_the_environment_default() {
        let e = check("SHIFTER_VOLUME", "data:/data", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("SHIFTER_VOLUME="), "{e}");
        assert!(e.contains("source must be an absolute path"), "{e}");
    }

    #[test]
    fn volume_onto_etc_or_a_site_reserved_path_is_refused() {
        for dst in ["/etc", "/etc/x", "/", "/proc", "/var/lib", "/site/x"] {
            let e = check("--volume", &format!("/tmp:{dst}"), Some(&cfg())).unwrap_err();
            assert!(e.to_string().contains("is forbidden"), "{dst}: {e}");
        }
        assert!(check("--volume", "/tmp:/var/tmp", Some(&cfg())).is_ok());
    }

    #[test]
    fn unknown_flag_and_duplicate_destination_are_refused() {
        assert!(check("--volume", "/a:/b:rx", None).is_err());
        assert!(check("--volume", "/a:/b:ro,rec", None).is_ok());
        assert!(check("--volume", "/a:/b;/c:/b", None).is_err());
    }
}
