//! pyxis-style option aliases for users coming from enroot/pyxis:
//! `--container-image` (= `--image`), `--container-mounts` (comma-separated
//! `SRC[:DST[:FLAGS]]`, mapped onto `--volume`) and `--container-workdir`.
//! Only the spelling is translated here; the same validation and machinery as
//! the native options apply afterwards.

use std::path::PathBuf;

use thiserror::Error;

pub const CONTAINER_MOUNTS: &str = "--container-mounts";
pub const CONTAINER_WORKDIR: &str = "--container-workdir";

#[derive(Debug, Error)]
pub enum AliasError {
    #[error("{option}={value:?}: {why}")]
    Bad {
        option: &'static str,
        value: String,
        why: String,
    },
}

/// `SRC[:DST[:FLAGS]],…` (pyxis) to `SRC:DST[:flags];…` (`--volume`). pyxis
/// joins several flags with `+`; `rw` and `bind` are what a bind already is,
/// `rbind` is a recursive bind.
pub fn mounts_to_volumes(value: &str) -> Result<String, AliasError> {
    let bad = |why: String| AliasError::Bad {
        option: CONTAINER_MOUNTS,
        value: value.to_owned(),
        why,
    };
    let mut out = Vec::new();
    let several = value.contains(',');
    // Name the offending mount only when the value holds several.
    let which = |mount: &str| {
        if several {
            format!("{mount:?}: ")
        } else {
            String::new()
        }
    };
    for mount in value.split(',').map(str::trim) {
        if mount.is_empty() {
            return Err(bad(
                "empty mount: write SRC:DST[:ro], several separated by ','".into(),
            ));
        }
        if mount.contains(';') {
            return Err(bad(format!(
                "{}separate mounts with ',' (';' is --volume's separator)",
                which(mount)
            )));
        }
        let mut parts = mount.splitn(3, ':');
        let src = parts.next().unwrap_or_default();
        let dst = parts.next().filter(|d| !d.is_empty()).unwrap_or(src);
        let mut flags = Vec::new();
        for flag in parts.next().into_iter().flat_map(|f| f.split('+')) {
            match flag {
                "ro" => flags.push("ro"),
                "rbind" => flags.push("rec"),
                "rw" | "bind" | "" => {}
                other => {
                    return Err(bad(format!(
                        "{}mount flag {other:?} is not supported; use ro, rw or rbind",
                        which(mount)
                    )))
                }
            }
        }
        let mut spec = format!("{src}:{dst}");
        if !flags.is_empty() {
            spec.push(':');
            spec.push_str(&flags.join(","));
        }
        out.push(spec);
    }
    Ok(out.join(";"))
}

/// The directory a task starts in; absolute, since it is a container path and
/// the submit directory means nothing there.
pub fn workdir(origin: &'static str, value: &str) -> Result<PathBuf, AliasError> {
    let p = PathBuf::from(value.trim());
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(AliasError::Bad {
            option: origin,
            value: value.to_owned(),
            why: "not an absolute path: give the directory inside the container, e.g. /work".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_separated_mounts_become_semicolon_separated_volumes() {
        assert_eq!(
            mounts_to_volumes("/home/u/data:/data,/scratch:/scratch:ro").unwrap(),
            "/home/u/data:/data;/scratch:/scratch:ro"
        );
    }

    #[test]
    fn a_mount_without_destination_binds_at_the_same_path() {
        assert_eq!(mounts_to_volumes("/scratch").unwrap(), "/scratch:/scratch");
        assert_eq!(mounts_to_volumes("/a::ro").unwrap(), "/a:/a:ro");
    }

    #[test]
    fn pyxis_flags_map_onto_volume_flags() {
        assert_eq!(mounts_to_volumes("/a:/b:rw").unwrap(), "/a:/b");
        assert_eq!(mounts_to_volumes("/a:/b:ro+rbind").unwrap(), "/a:/b:ro,rec");
    }

    #[test]
    fn bad_mount_specs_name_the_option() {
        for bad in ["/a:/b:exec", "/a:/b,,/c:/d", "/a:/b;/c:/d", ""] {
            let e = mounts_to_volumes(bad).unwrap_err().to_string();
            assert!(e.starts_with("--container-mounts="), "{bad}: {e}");
        }
    }

    #[test]
    fn the_mapped_volumes_pass_the_volume_parser() {
        let v = mounts_to_volumes("/a:/b:ro+rbind,/c").unwrap();
        let parsed = runtime_core::Volume::parse_all(&[v]).unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(parsed[0].read_only && parsed[0].recursive);
    }

    #[test]
    fn workdir_must_be_an_absolute_container_path() {
        assert_eq!(
            workdir(CONTAINER_WORKDIR, "/work").unwrap(),
            PathBuf::from("/work")
        );
        let e = workdir(CONTAINER_WORKDIR, "work").unwrap_err().to_string();
        assert!(e.starts_with("--container-workdir=\"work\""), "{e}");
    }
}
