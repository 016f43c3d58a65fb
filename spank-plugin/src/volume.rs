//! Submit-time check of `--volume` / `SHIFTER_VOLUME` syntax, so a typo fails
//! in srun/sbatch before the job waits in the queue. The node re-parses and
//! enforces everything (as the user, inside the container root); this only
//! catches what can be known on the submit host.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum VolumeError {
    #[error(
        "{origin}={spec:?}: expected SOURCE:DESTINATION[:ro], e.g. {origin}=/scratch/me:/data:ro"
    )]
    Shape { origin: &'static str, spec: String },
    #[error("{origin}={spec:?}: {which} {path:?} must be an absolute path")]
    Relative {
        origin: &'static str,
        spec: String,
        which: &'static str,
        path: String,
    },
    #[error(
        "{origin}={spec:?}: unknown flag {flag:?}: the flags are ro, rw and rec (comma-separated)"
    )]
    Flag {
        origin: &'static str,
        spec: String,
        flag: String,
    },
    #[error("{origin}={spec:?}: the destination {dest} is reserved in the container: pick another path, e.g. /data")]
    Forbidden {
        origin: &'static str,
        spec: String,
        dest: String,
    },
}

/// Container paths no volume may cover (the runtime refuses them too).
const FORBIDDEN: &[&str] = &[
    "/",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/var",
    "/opt/udiImage",
];

fn normalise(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn forbidden(dest: &str) -> bool {
    let d = normalise(dest);
    if d == "/var/tmp" || d.starts_with("/var/tmp/") {
        return false;
    }
    FORBIDDEN
        .iter()
        .any(|f| d == *f || (*f != "/" && d.starts_with(&format!("{f}/"))))
}

/// Splits one option value on `;` and checks each volume; returns the specs.
pub fn check(origin: &'static str, value: &str) -> Result<Vec<String>, VolumeError> {
    let mut out = Vec::new();
    for spec in value.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let fields: Vec<&str> = spec.split(':').collect();
        let shape = || VolumeError::Shape {
            origin,
            spec: spec.to_owned(),
        };
        let (src, dst, flags) = match fields.as_slice() {
            [s, d] => (*s, *d, None),
            [s, d, f] => (*s, *d, Some(*f)),
            _ => return Err(shape()),
        };
        if src.is_empty() || dst.is_empty() {
            return Err(shape());
        }
        for (which, path) in [("source", src), ("destination", dst)] {
            if !path.starts_with('/') {
                return Err(VolumeError::Relative {
                    origin,
                    spec: spec.to_owned(),
                    which,
                    path: path.to_owned(),
                });
            }
        }
        if dst.split('/').any(|c| c == "..") || forbidden(dst) {
            return Err(VolumeError::Forbidden {
                origin,
                spec: spec.to_owned(),
                dest: dst.to_owned(),
            });
        }
        if let Some(flags) = flags {
            if let Some(bad) = flags
                .split(',')
                .find(|f| !matches!(*f, "ro" | "rw" | "rec"))
            {
                return Err(VolumeError::Flag {
                    origin,
                    spec: spec.to_owned(),
                    flag: bad.to_owned(),
                });
            }
        }
        out.push(spec.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_volumes_split_on_semicolons() {
        let v = check("--volume", "/a:/data;/b:/scratch:ro; ").unwrap();
        assert_eq!(v, vec!["/a:/data", "/b:/scratch:ro"]);
    }

    #[test]
    fn missing_destination_names_the_expected_form() {
        let e = check("--volume", "/scratch").unwrap_err();
        assert!(
            e.to_string().contains("expected SOURCE:DESTINATION[:ro]"),
            "{e}"
        );
        assert!(e.to_string().starts_with("--volume=\"/scratch\""), "{e}");
    }

    #[test]
    fn relative_paths_are_refused_naming_which_side() {
        let e = check("SHIFTER_VOLUME", "data:/data").unwrap_err();
        assert!(matches!(
            e,
            VolumeError::Relative {
                which: "source",
                ..
            }
        ));
        assert!(e.to_string().starts_with("SHIFTER_VOLUME="), "{e}");
        assert!(matches!(
            check("--volume", "/data:data").unwrap_err(),
            VolumeError::Relative {
                which: "destination",
                ..
            }
        ));
    }

    #[test]
    fn volume_onto_etc_or_root_is_refused() {
        for dst in [
            "/etc",
            "/etc/x",
            "/",
            "/proc",
            "/var/lib",
            "/data/../etc",
            "//etc/",
        ] {
            let e = check("--volume", &format!("/tmp:{dst}")).unwrap_err();
            assert!(matches!(e, VolumeError::Forbidden { .. }), "{dst}: {e}");
        }
        assert!(check("--volume", "/tmp:/var/tmp").is_ok());
        assert!(check("--volume", "/tmp:/etcetera").is_ok());
    }

    #[test]
    fn unknown_flag_is_refused() {
        let e = check("--volume", "/a:/b:rx").unwrap_err();
        assert!(matches!(e, VolumeError::Flag { ref flag, .. } if flag == "rx"));
        assert!(check("--volume", "/a:/b:ro,rec").is_ok());
    }
}
