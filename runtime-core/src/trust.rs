//! Ownership and permission checks for files the runtime trusts as root: the
//! site config and the image store. A file that a user could have written (or
//! replaced, through a writable directory above it) must never be used.

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

const GROUP_OR_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

#[derive(Debug, Error)]
pub enum TrustError {
    #[error("cannot inspect {path}: {cause}")]
    Stat {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is owned by uid {uid}, but only {allowed} may own it: chown it to root")]
    BadOwner {
        path: PathBuf,
        uid: u32,
        allowed: String,
    },
    #[error("{path} has mode {mode:04o} and is writable by group or others: chmod go-w {path}")]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
}

/// Who may own trusted files and directories: root plus, optionally, the
/// gateway account that publishes images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owners {
    allowed: Vec<u32>,
}

impl Owners {
    pub fn root_only() -> Self {
        Owners { allowed: vec![0] }
    }

    pub fn root_and(extra: Option<u32>) -> Self {
        let mut allowed = vec![0];
        allowed.extend(extra.filter(|&u| u != 0));
        Owners { allowed }
    }

    fn admits(&self, uid: u32) -> bool {
        self.allowed.contains(&uid)
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self
            .allowed
            .iter()
            .map(|u| {
                if *u == 0 {
                    "root".to_owned()
                } else {
                    format!("uid {u}")
                }
            })
            .collect();
        names.join(" or ")
    }
}

/// Checks one inode's metadata: allowed owner and no group/other write bit.
pub fn check_meta(path: &Path, meta: &Metadata, owners: &Owners) -> Result<(), TrustError> {
    if !owners.admits(meta.uid()) {
        return Err(TrustError::BadOwner {
            path: path.to_owned(),
            uid: meta.uid(),
            allowed: owners.describe(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & GROUP_OR_OTHER_WRITE != 0 {
        return Err(TrustError::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Checks a regular file and every directory above it up to `/`.
///
/// Directories from the file up to and including `trusted_top` must pass
/// [`check_meta`]. Directories above `trusted_top` may instead be root-owned and
/// sticky (such as `/tmp`): there, other users can add entries but cannot rename
/// or remove ours, so our subtree cannot be swapped.
pub fn check_file_and_parents(
    file: &Path,
    trusted_top: &Path,
    owners: &Owners,
) -> Result<Metadata, TrustError> {
    let stat = |p: &Path| {
        std::fs::symlink_metadata(p).map_err(|cause| TrustError::Stat {
            path: p.to_owned(),
            cause,
        })
    };
    let canon = std::fs::canonicalize(file).map_err(|cause| TrustError::Stat {
        path: file.to_owned(),
        cause,
    })?;
    let top = std::fs::canonicalize(trusted_top).map_err(|cause| TrustError::Stat {
        path: trusted_top.to_owned(),
        cause,
    })?;
    let meta = stat(&canon)?;
    if !meta.file_type().is_file() {
        return Err(TrustError::NotRegular { path: canon });
    }
    check_meta(&canon, &meta, owners)?;
    check_dirs_above(&canon, &top, owners)?;
    Ok(meta)
}

/// Checks every directory above `path` (already canonical) up to `/`.
pub fn check_dirs_above(path: &Path, top: &Path, owners: &Owners) -> Result<(), TrustError> {
    let mut above_top = !path.starts_with(top);
    for dir in path.ancestors().skip(1) {
        let meta = std::fs::symlink_metadata(dir).map_err(|cause| TrustError::Stat {
            path: dir.to_owned(),
            cause,
        })?;
        let mode = meta.permissions().mode();
        let sticky_root = meta.uid() == 0 && mode & STICKY != 0;
        if !(above_top && sticky_root) {
            check_meta(dir, &meta, owners)?;
        }
        if dir == top {
            above_top = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn running_as_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn group_writable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        fs::write(&f, "x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o664)).unwrap();
        let owners = Owners::root_and(Some(nix::unistd::geteuid().as_raw()));
        let err = check_meta(&f, &fs::metadata(&f).unwrap(), &owners).unwrap_err();
        assert!(
            matches!(err, TrustError::Writable { mode: 0o664, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod go-w"));
    }

    #[test]
    fn file_of_another_owner_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        fs::write(&f, "x").unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let owners = Owners {
            allowed: vec![me.wrapping_add(4242)],
        };
        let err = check_meta(&f, &fs::metadata(&f).unwrap(), &owners).unwrap_err();
        assert!(matches!(err, TrustError::BadOwner { uid, .. } if uid == me));
    }

    #[test]
    fn writable_directory_between_file_and_top_is_refused() {
        if !running_as_root() {
            test_skip::skip(
                "writable_directory_between_file_and_top_is_refused",
                "needs root (tempdirs must be root-owned)",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("images");
        fs::create_dir(&sub).unwrap();
        let f = sub.join("a.squashfs");
        fs::write(&f, "x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o755)).unwrap();
        check_file_and_parents(&f, &sub, &Owners::root_only()).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o775)).unwrap();
        let err = check_file_and_parents(&f, &sub, &Owners::root_only()).unwrap_err();
        assert!(matches!(err, TrustError::Writable { ref path, .. } if path.ends_with("images")));
    }

    #[test]
    fn sticky_tmp_above_the_top_is_accepted_but_not_below_it() {
        if !running_as_root() {
            test_skip::skip(
                "sticky_tmp_above_the_top_is_accepted_but_not_below_it",
                "needs root",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("images");
        fs::create_dir(&sub).unwrap();
        let f = sub.join("a.squashfs");
        fs::write(&f, "x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        check_file_and_parents(&f, &sub, &Owners::root_only()).unwrap();
        // The same sticky directory *as* the top is not acceptable: users could
        // add files to the image store.
        let err = check_file_and_parents(&f, dir.path(), &Owners::root_only()).unwrap_err();
        assert!(matches!(err, TrustError::Writable { .. }), "{err}");
    }

    #[test]
    fn directory_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_file_and_parents(dir.path(), dir.path(), &Owners::root_only()).unwrap_err();
        assert!(matches!(err, TrustError::NotRegular { .. }));
    }
}
