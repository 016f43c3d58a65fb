//! The assembler: every root action of the setup goes through one of its
//! small methods, each on descriptors (a detached mount, a checked target),
//! and the one rollback that detaches the whole tree at once.

use std::path::{Path, PathBuf};

use crate::config::SiteMount;
use crate::sys::{Create, FsSpec, Handle, MntFlags, MountAttrs, NodeKind, Sys, SysError};
use crate::volume::DestinationPolicy;

use super::SetupError;

/// The directories of one assembly below `mount_root`.
pub(super) struct Layout {
    pub(super) base: PathBuf,
    pub(super) lower: PathBuf,
    pub(super) upper: PathBuf,
    pub(super) work: PathBuf,
    pub(super) root: PathBuf,
}

impl Layout {
    pub(super) fn new(mount_root: &Path) -> Self {
        Layout {
            base: mount_root.to_owned(),
            lower: mount_root.join("lower"),
            upper: mount_root.join("upper"),
            work: mount_root.join("work"),
            root: mount_root.join("root"),
        }
    }
}

pub(super) struct Assembler<'a> {
    pub(super) sys: &'a dyn Sys,
    /// Fresh filesystems the runtime itself made inside the root (private
    /// `/tmp`, `/dev`), by container path: admin destinations below them are
    /// created on them (they hold nothing of the user's yet).
    pub(super) own_mounts: Vec<(PathBuf, Handle)>,
    /// Mount points made, for diagnostics.
    pub(super) mounted: Vec<PathBuf>,
    /// Whether the step's tmpfs at `mount_root` is attached (rollback detaches it).
    pub(super) base: Option<PathBuf>,
}

pub(super) fn container_path(root: &Path, host: &Path) -> Option<PathBuf> {
    host.strip_prefix(root)
        .ok()
        .map(|rel| Path::new("/").join(rel))
}

pub(super) fn is_diversion(e: &SysError) -> bool {
    use nix::errno::Errno;
    matches!(e.errno, Errno::EXDEV | Errno::ELOOP | Errno::ENOTDIR)
}

impl Assembler<'_> {
    pub(super) fn step<T>(
        &self,
        step: impl Into<String>,
        r: Result<T, SysError>,
    ) -> Result<T, SetupError> {
        r.map_err(|source| SetupError::Sys {
            step: step.into(),
            cause: source,
        })
    }

    /// Attaches the detached `mount` onto `target` and notes it.
    pub(super) fn attach(
        &mut self,
        step: &str,
        mount: &Handle,
        target: &Handle,
    ) -> Result<(), SetupError> {
        self.step(step, self.sys.move_mount(mount, target))?;
        self.mounted.push(target.host_path().to_owned());
        Ok(())
    }

    /// A new filesystem, attached at the runtime's own path `rel` below
    /// `dir` (no symlink, no other mount on the way); returns the mount.
    pub(super) fn new_fs_beneath(
        &mut self,
        step: &str,
        dir: &Handle,
        under: &str,
        rel: &str,
        spec: &FsSpec<'_>,
    ) -> Result<Handle, SetupError> {
        let target = self.system_target(dir, under, rel, NodeKind::Dir)?;
        let fs = self.step(step, self.sys.fs_mount(spec))?;
        self.attach(step, &fs, &target)?;
        Ok(fs)
    }

    /// The runtime's own path `rel` below `dir`, created when missing. An image
    /// symlink or another mount on the way is refused, not followed.
    /// `under` is where `dir` is in the container, for messages.
    pub(super) fn system_target(
        &self,
        dir: &Handle,
        under: &str,
        rel: &str,
        kind: NodeKind,
    ) -> Result<Handle, SetupError> {
        self.sys
            .open_beneath(dir, Path::new(rel), Create::here(kind))
            .map_err(|e| {
                if is_diversion(&e) {
                    SetupError::Diverted {
                        what: "system path",
                        path: Path::new(under).join(rel),
                    }
                } else {
                    SetupError::Sys {
                        step: format!("creating {rel} in the container"),
                        cause: e,
                    }
                }
            })
    }

    /// An admin's destination (site mount, module, sshd tool): resolved inside
    /// the root and on the root's own mount only, so an image symlink cannot
    /// lead it into a host directory bound earlier; created there if missing.
    pub(super) fn admin_target(
        &self,
        what: &'static str,
        root: &Path,
        dest: &Path,
        kind: NodeKind,
        exact: bool,
    ) -> Result<Handle, SetupError> {
        let own = self
            .own_mounts
            .iter()
            .filter_map(|(at, h)| dest.strip_prefix(at).ok().map(|rest| (at, h, rest)))
            .max_by_key(|(at, _, _)| at.as_os_str().len());
        let resolved = match own {
            Some((_, mount, rest)) if !rest.as_os_str().is_empty() => {
                self.sys.open_beneath(mount, rest, Create::here(kind))
            }
            _ => self
                .sys
                .resolve_on_root_mount(root, dest, Create::here(kind)),
        };
        let h = resolved.map_err(|e| {
            if is_diversion(&e) {
                SetupError::Diverted {
                    what,
                    path: dest.to_owned(),
                }
            } else {
                SetupError::Sys {
                    step: format!("{what}: creating {}", dest.display()),
                    cause: e,
                }
            }
        })?;
        if exact {
            let resolved = container_path(root, h.host_path());
            if resolved.as_deref() != Some(dest) {
                return Err(SetupError::Redirected {
                    what,
                    path: dest.to_owned(),
                    resolved: resolved.unwrap_or_else(|| h.host_path().to_owned()),
                });
            }
        }
        Ok(h)
    }

    /// A user's destination: an existing path may lie on any mount (a nested
    /// volume, a site mount), a missing one is only created on the root's own
    /// mount; the policy is checked on where it actually resolved.
    pub(super) fn user_target(
        &self,
        step: &str,
        root: &Path,
        dest: &Path,
        kind: NodeKind,
        policy: &DestinationPolicy,
    ) -> Result<Handle, SetupError> {
        let target = match self.sys.resolve_in_root(root, dest, Create::here(kind)) {
            Err(e) if e.errno == nix::errno::Errno::EXDEV => {
                return Err(SetupError::DestinationOnHostMount {
                    destination: dest.to_owned(),
                })
            }
            other => self.step(format!("{step}: creating {}", dest.display()), other)?,
        };
        let resolved =
            container_path(root, target.host_path()).ok_or_else(|| SetupError::Redirected {
                what: "destination",
                path: dest.to_owned(),
                resolved: target.host_path().to_owned(),
            })?;
        policy.check(&resolved)?;
        Ok(target)
    }

    /// A detached copy of `source` with `attrs` already applied (the kernel
    /// ignores them on a plain bind; here they are set before the mount is
    /// reachable, so no path swap can move them off it).
    pub(super) fn detached_bind(
        &self,
        step: &str,
        source: &Handle,
        attrs: MountAttrs,
        recursive: bool,
    ) -> Result<Handle, SetupError> {
        let tree = self.step(
            format!("{step}: cloning {}", source.host_path().display()),
            self.sys.open_tree(source, recursive),
        )?;
        self.step(
            format!("{step}: setting {attrs:?}"),
            self.sys.mount_setattr(&tree, attrs, recursive),
        )?;
        Ok(tree)
    }
    pub(super) fn site_mount(
        &mut self,
        step: &str,
        root: &Path,
        m: &SiteMount,
    ) -> Result<(), SetupError> {
        let (src, kind) = self.step(
            format!("{step}: opening {}", m.source.display()),
            self.sys.open_host(&m.source),
        )?;
        let attrs = MountAttrs::NOSUID_NODEV.with_rdonly(m.read_only);
        let tree = self.detached_bind(step, &src, attrs, m.recursive)?;
        let target =
            self.admin_target("site or module mount", root, m.destination(), kind, false)?;
        self.attach(step, &tree, &target)
    }

    pub(super) fn rollback(&mut self) {
        // Everything hangs below the step's tmpfs: one lazy detach takes the
        // whole tree, whatever the user did to paths inside it.
        if let Some(base) = self.base.take() {
            if let Err(e) = self.sys.umount(&base, MntFlags::MNT_DETACH) {
                tracing::warn!(error = %e, "rollback: could not detach {}", base.display());
            }
        }
        self.mounted.clear();
    }
}
