//! Assembling the container root (design §4, steps 2–5), as root, in a new
//! private mount namespace. Everything goes through [`Sys`].
//!
//! The discipline (docs/security.md): every mount is built detached — a new
//! filesystem with `fsmount`, a bind with `open_tree` — with its attributes
//! set on the detached mount, then attached with `move_mount` onto a target
//! descriptor from one checked resolution. Nothing is ever looked up by path
//! again afterwards. Root writes into the image's root (`/etc` files, module
//! and sshd files) happen right after the overlay is mounted, before any
//! other mount exists, and only on the overlay's own mount. Creation of
//! missing destinations never crosses a mount. On error the whole tree is
//! detached at once (it all hangs below `mount_root`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use thiserror::Error;

use crate::config::{Config, Module, SiteMount, TmpMode};
use crate::etc;
use crate::image::CheckedImage;
pub use crate::prepared::PreparedRoot;
use crate::sshd;
use crate::sys::{Create, FsSpec, Handle, MntFlags, MountAttrs, MsFlags, NodeKind, Sys, SysError};
use crate::user::UserInfo;
use crate::volume::{DestinationPolicy, Volume, VolumeError};

/// Device nodes every container gets, bound from the host's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

#[derive(Debug, Error)]
pub enum SetupError {
    #[error("{step}: {cause}")]
    Sys { step: String, cause: SysError },
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("cannot read your volume source {source_path}: {errno}; check that you can read it (ls -ld {source_path})")]
    VolumeSource {
        source_path: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("opening your volume source {source_path} as you did not finish in {secs} s (a hung network or FUSE filesystem?); check that `ls {source_path}` answers, or leave that volume out")]
    VolumeSourceHung { source_path: PathBuf, secs: u64 },
    #[error("mount_root {0} contains ',' or ':', which overlayfs options cannot carry: choose another mount_root")]
    BadMountRoot(PathBuf),
    #[error("image {image} could not be mounted ({errno}): the file is not a valid squashfs image; re-pull or re-import it")]
    BadImage {
        image: PathBuf,
        errno: nix::errno::Errno,
    },
    #[error("volume destination {destination} does not exist and would have to be created inside another mount (a site mount or /tmp): create it there yourself first, or choose a path of the image")]
    DestinationOnHostMount { destination: PathBuf },
    #[error(transparent)]
    Cache(#[from] crate::per_node_cache::CacheError),
    #[error(transparent)]
    Sshd(#[from] crate::sshd::SshdError),
    #[error("{what} {path} resolved to {resolved} inside the container, which is not allowed")]
    Redirected {
        what: &'static str,
        path: PathBuf,
        resolved: PathBuf,
    },
    #[error("{what} {path}: the image makes it (or a directory above it) a symlink or puts it on another mount, where the runtime will not create or mount anything; use an image where {path} is a plain directory")]
    Diverted { what: &'static str, path: PathBuf },
}

/// The directories of one assembly below `mount_root`.
struct Layout {
    base: PathBuf,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    root: PathBuf,
}

impl Layout {
    fn new(mount_root: &Path) -> Self {
        Layout {
            base: mount_root.to_owned(),
            lower: mount_root.join("lower"),
            upper: mount_root.join("upper"),
            work: mount_root.join("work"),
            root: mount_root.join("root"),
        }
    }
}

/// Everything `prepare` needs besides the config and the image.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub volumes: &'a [Volume],
    /// Modules already resolved with [`Config::resolve_modules`].
    pub modules: &'a [(&'a str, &'a Module)],
    /// The job's sshd (`enable_sshd`), from [`sshd::plan`].
    pub sshd: Option<&'a sshd::Plan>,
}

struct Assembler<'a> {
    sys: &'a dyn Sys,
    /// Fresh filesystems the runtime itself made inside the root (private
    /// `/tmp`, `/dev`), by container path: admin destinations below them are
    /// created on them (they hold nothing of the user's yet).
    own_mounts: Vec<(PathBuf, Handle)>,
    /// Mount points made, for diagnostics.
    mounted: Vec<PathBuf>,
    /// Whether the step's tmpfs at `mount_root` is attached (rollback detaches it).
    base: Option<PathBuf>,
}

fn container_path(root: &Path, host: &Path) -> Option<PathBuf> {
    host.strip_prefix(root)
        .ok()
        .map(|rel| Path::new("/").join(rel))
}

fn is_diversion(e: &SysError) -> bool {
    use nix::errno::Errno;
    matches!(e.errno, Errno::EXDEV | Errno::ELOOP | Errno::ENOTDIR)
}

impl Assembler<'_> {
    fn step<T>(&self, step: impl Into<String>, r: Result<T, SysError>) -> Result<T, SetupError> {
        r.map_err(|source| SetupError::Sys {
            step: step.into(),
            cause: source,
        })
    }

    /// Attaches the detached `mount` onto `target` and notes it.
    fn attach(&mut self, step: &str, mount: &Handle, target: &Handle) -> Result<(), SetupError> {
        self.step(step, self.sys.move_mount(mount, target))?;
        self.mounted.push(target.host_path().to_owned());
        Ok(())
    }

    /// A new filesystem, attached at the runtime's own path `rel` below
    /// `dir` (no symlink, no other mount on the way); returns the mount.
    fn new_fs_beneath(
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
    fn system_target(
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
    fn admin_target(
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
    fn user_target(
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
    fn detached_bind(
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

    /// Makes a per-node cache and mounts it at `v.destination`, owned by the
    /// user, mode 0700: ownership is set on the new filesystem's own root
    /// through the detached mount, before it is attached anywhere.
    #[allow(clippy::too_many_arguments)]
    fn cache_mount(
        &mut self,
        cfg: &Config,
        root: &Path,
        v: &Volume,
        req: &crate::per_node_cache::CacheRequest,
        index: usize,
        user: &UserInfo,
        policy: &DestinationPolicy,
    ) -> Result<(), SetupError> {
        let Some(cache_cfg) = cfg.per_node_cache.as_ref() else {
            // check_volume refuses this before anything is mounted.
            return Err(VolumeError::CacheRefused {
                destination: v.destination.clone(),
                why: "[per_node_cache] is not configured".into(),
            }
            .into());
        };
        let dest = &v.destination;
        let step = format!("per-node cache {}", dest.display());
        let target = self.user_target(&step, root, dest, NodeKind::Dir, policy)?;
        let formatted = crate::per_node_cache::format(
            self.sys, cache_cfg, &v.source, dest, req, index, user.uid,
        )?;
        let device = formatted.device.path.to_string_lossy().into_owned();
        let fs = self.step(
            format!("{step}: mounting the xfs"),
            self.sys.fs_mount(&FsSpec {
                fstype: "xfs",
                source: &device,
                data: "",
                attrs: MountAttrs::NOSUID_NODEV,
            }),
        )?;
        // The mount holds the device now; our descriptor can go.
        drop(formatted);
        self.step(
            format!("{step}: giving it to uid {}", user.uid),
            self.sys.chown_dir(&fs, user.uid, user.gid, 0o700),
        )?;
        self.attach(&step, &fs, &target)
    }

    fn site_mount(&mut self, step: &str, root: &Path, m: &SiteMount) -> Result<(), SetupError> {
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

    fn rollback(&mut self) {
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

/// Builds the container root for `user` from a checked image.
///
/// Call as root, single-threaded, once per step (the Slurm plugin) or once per
/// `shifter` run. It unshares the mount namespace of the calling process, so
/// nothing it mounts is visible on the host and everything goes away with the
/// last process of the namespace.
pub fn prepare(
    sys: &dyn Sys,
    cfg: &Config,
    image: &CheckedImage,
    user: &UserInfo,
    req: &Request<'_>,
) -> Result<PreparedRoot, SetupError> {
    let started = Instant::now();
    let mut a = Assembler {
        sys,
        own_mounts: Vec::new(),
        mounted: Vec::new(),
        base: None,
    };
    match assemble(&mut a, cfg, image, user, req) {
        Ok(prepared) => {
            tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, image = %image.id(), "container root assembled");
            Ok(prepared)
        }
        Err(e) => {
            a.rollback();
            Err(e)
        }
    }
}

fn assemble(
    a: &mut Assembler<'_>,
    cfg: &Config,
    image: &CheckedImage,
    user: &UserInfo,
    req: &Request<'_>,
) -> Result<PreparedRoot, SetupError> {
    let sys = a.sys;
    let base = cfg.mount_root.to_string_lossy();
    if base.contains([',', ':']) {
        return Err(SetupError::BadMountRoot(cfg.mount_root.clone()));
    }
    let policy = DestinationPolicy::new(cfg);
    // Check every user destination before anything is mounted.
    for v in req.volumes {
        policy.check_volume(v)?;
    }
    // Held until the caches are attached (end of this function).
    let _cache_lock = reserve_cache_totals(sys, cfg, user, req.volumes)?;
    let l = Layout::new(&cfg.mount_root);

    a.step("new mount namespace", sys.unshare_mount_ns())?;
    // MS_SLAVE: host unmounts still reach us, our mounts never reach the host.
    a.step(
        "making / a slave mount",
        sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None,
        ),
    )?;
    let sources = detach_volume_sources(a, user, req.volumes)?;
    a.step("creating mount_root", sys.mkdir_all(&l.base, 0o755))?;
    // One size-capped tmpfs holds the overlay's upper and work dirs, so the
    // writable layer is bounded and vanishes with the namespace.
    let data = format!("size={},mode=0755", cfg.upper_size);
    let (base_dir, _) = a.step("opening mount_root", sys.open_host(&l.base))?;
    let base_fs = a.step(
        "mounting the writable layer",
        sys.fs_mount(&FsSpec {
            fstype: "tmpfs",
            source: "shifter-upper",
            data: &data,
            attrs: MountAttrs::NOSUID_NODEV,
        }),
    )?;
    a.attach("mounting the writable layer", &base_fs, &base_dir)?;
    a.base = Some(l.base.clone());
    for d in [&l.lower, &l.upper, &l.work, &l.root] {
        a.step("creating layout", sys.mkdir_all(d, 0o755))?;
    }

    let loopdev = a.step(
        "attaching the image to a loop device",
        sys.attach_loop(image.file(), image.squashfs()),
    )?;
    let device = loopdev.path.to_string_lossy().into_owned();
    let squash = match sys.fs_mount(&FsSpec {
        fstype: "squashfs",
        source: &device,
        data: "",
        attrs: MountAttrs::NOSUID_NODEV.with_rdonly(true),
    }) {
        Ok(m) => m,
        Err(e) if matches!(e.errno, nix::errno::Errno::EINVAL | nix::errno::Errno::EIO) => {
            return Err(SetupError::BadImage {
                image: image.squashfs().to_owned(),
                errno: e.errno,
            })
        }
        Err(source) => {
            return Err(SetupError::Sys {
                step: "mounting the image".into(),
                cause: source,
            })
        }
    };
    let (lower_dir, _) = a.step("opening the lower dir", sys.open_host(&l.lower))?;
    a.attach("mounting the image", &squash, &lower_dir)?;
    // The mount holds the device now; our descriptor can go (autoclear then
    // frees the device when the mount does).
    let loop_path = loopdev.path.clone();
    drop(loopdev);

    let overlay = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.lower.display(),
        l.upper.display(),
        l.work.display()
    );
    let ovl = a.step(
        "mounting the overlay root",
        sys.fs_mount(&FsSpec {
            fstype: "overlay",
            source: "overlay",
            data: &overlay,
            attrs: MountAttrs::NOSUID_NODEV,
        }),
    )?;
    let (root_dir, _) = a.step("opening the root dir", sys.open_host(&l.root))?;
    a.attach("mounting the overlay root", &ovl, &root_dir)?;
    let root = l.root.as_path();

    // Root's writes into the image's root, while the overlay is the only
    // mount in it: /etc identity files and the host's name resolution,
    // module library lists, sshd's client config.
    write_etc(a, cfg, root, user)?;
    write_ld_so_conf(a, root, req.modules)?;
    if let Some(plan) = req.sshd {
        sshd::write_root_files(sys, cfg, root, user, plan)?;
    }

    a.new_fs_beneath(
        "mounting /proc",
        &ovl,
        "/",
        "proc",
        &FsSpec {
            fstype: "proc",
            source: "proc",
            data: "",
            attrs: MountAttrs::NOSUID_NODEV_NOEXEC,
        },
    )?;
    a.new_fs_beneath(
        "mounting /sys",
        &ovl,
        "/",
        "sys",
        &FsSpec {
            fstype: "sysfs",
            source: "sysfs",
            data: "",
            attrs: MountAttrs::NOSUID_NODEV_NOEXEC.with_rdonly(true),
        },
    )?;
    mount_dev(a, &ovl, req.modules)?;

    match cfg.tmp {
        TmpMode::Private => {
            let data = format!("size={},mode=1777", cfg.tmp_size);
            let tmp = a.new_fs_beneath(
                "mounting /tmp",
                &ovl,
                "/",
                "tmp",
                &FsSpec {
                    fstype: "tmpfs",
                    source: "tmpfs",
                    data: &data,
                    attrs: MountAttrs::NOSUID_NODEV,
                },
            )?;
            a.own_mounts.push(("/tmp".into(), tmp));
        }
        TmpMode::Host => {
            let step = "binding the host /tmp";
            let (src, _) = a.step(step, sys.open_host(Path::new("/tmp")))?;
            let tree = a.detached_bind(step, &src, MountAttrs::NOSUID_NODEV, false)?;
            let target = a.system_target(&ovl, "/", "tmp", NodeKind::Dir)?;
            a.attach(step, &tree, &target)?;
        }
    }

    for m in &cfg.site_fs {
        a.site_mount(
            &format!("site mount {}", m.destination().display()),
            root,
            m,
        )?;
    }
    for (name, module) in req.modules {
        for m in &module.mounts {
            a.site_mount(
                &format!("module {name} mount {}", m.destination().display()),
                root,
                m,
            )?;
        }
    }
    if let Some(plan) = req.sshd {
        let job_dir = sshd::write_job_dir(sys, &base_fs, user, plan)?;
        for (source, dest, attrs) in sshd::tool_binds(cfg) {
            let step = format!("sshd: binding {} at {dest}", source.display());
            let (src, kind) = a.step(step.clone(), sys.open_host(&source))?;
            let tree = a.detached_bind(&step, &src, attrs, false)?;
            let target = a.admin_target("sshd path", root, Path::new(&dest), kind, true)?;
            a.attach(&step, &tree, &target)?;
        }
        let step = format!("sshd: binding the job directory at {}", sshd::JOB_DIR);
        let tree = a.detached_bind(&step, &job_dir, MountAttrs::NOSUID_NODEV_NOEXEC, false)?;
        let target = a.admin_target(
            "sshd path",
            root,
            Path::new(sshd::JOB_DIR),
            NodeKind::Dir,
            true,
        )?;
        a.attach(&step, &tree, &target)?;
    }

    // User volumes last: from here on, directories the user controls are
    // reachable inside the root, and root only ever mounts prepared,
    // detached mounts onto descriptors.
    for (index, (v, source)) in req.volumes.iter().zip(sources).enumerate() {
        let Some((tree, kind)) = source else {
            if let Some(cache) = &v.cache {
                a.cache_mount(cfg, root, v, cache, index, user, &policy)?;
            }
            continue;
        };
        let step = volume_step(v);
        let target = a.user_target(&step, root, &v.destination, kind, &policy)?;
        a.attach(&step, &tree, &target)?;
    }

    Ok(PreparedRoot {
        root: l.root.clone(),
        loop_device: loop_path,
        mounts: a.mounted.clone(),
    })
}

/// Every bind source opened as the user and cloned, with its flags set on
/// every submount, first thing in the new namespace: before anything of ours
/// is mounted, so a source path under mount_root names the host's directory
/// and a source above it (`/`) cannot drag the container's own mounts in, and
/// before a loop device exists, so an opener that hangs on the user's
/// filesystem costs nothing to undo. Always recursive: a plain bind would
/// show what the host's submounts cover, files the user cannot see on the
/// host. `None` for per-node caches, which have no source.
fn detach_volume_sources(
    a: &Assembler<'_>,
    user: &UserInfo,
    volumes: &[Volume],
) -> Result<Vec<Option<(Handle, NodeKind)>>, SetupError> {
    let creds = user.creds();
    volumes
        .iter()
        .map(|v| {
            if v.cache.is_some() {
                return Ok(None);
            }
            let (src, kind) = a
                .sys
                .open_as_user(&v.source, &creds)
                .map_err(|e| match e.errno {
                    nix::errno::Errno::ETIMEDOUT => SetupError::VolumeSourceHung {
                        source_path: v.source.clone(),
                        secs: crate::sys::USER_OPEN_TIMEOUT.as_secs(),
                    },
                    errno => SetupError::VolumeSource {
                        source_path: v.source.clone(),
                        errno,
                    },
                })?;
            let attrs = MountAttrs::NOSUID_NODEV.with_rdonly(v.read_only);
            let tree = a.detached_bind(&volume_step(v), &src, attrs, true)?;
            Ok(Some((tree, kind)))
        })
        .collect()
}

fn volume_step(v: &Volume) -> String {
    format!("volume {}:{}", v.source.display(), v.destination.display())
}

/// The per-step count and the per-user node total of per-node caches,
/// before anything is made, under the user's cache lock (returned: keep it
/// until the caches are attached).
fn reserve_cache_totals(
    sys: &dyn Sys,
    cfg: &Config,
    user: &UserInfo,
    volumes: &[Volume],
) -> Result<Option<Handle>, SetupError> {
    let sizes: Vec<u64> = volumes
        .iter()
        .filter_map(|v| v.cache.as_ref().map(|c| c.size))
        .collect();
    let (Some(cache_cfg), Some(first)) = (
        cfg.per_node_cache.as_ref(),
        volumes.iter().find(|v| v.cache.is_some()),
    ) else {
        return Ok(None);
    };
    let lock =
        crate::per_node_cache::lock_user_totals(sys, cache_cfg, user.uid, &first.destination)?;
    let attached =
        crate::per_node_cache::attached_bytes(user.uid, crate::per_node_cache::loop_devices());
    crate::per_node_cache::check_totals(cache_cfg, user.uid, &sizes, attached).map_err(|why| {
        VolumeError::CacheRefused {
            destination: first.destination.clone(),
            why,
        }
    })?;
    Ok(Some(lock))
}

/// `/etc/passwd`, `/etc/group`, `/etc/nsswitch.conf` generated for the user,
/// `/etc/hosts` and `/etc/resolv.conf` copied from the host.
fn write_etc(
    a: &mut Assembler<'_>,
    cfg: &Config,
    root: &Path,
    user: &UserInfo,
) -> Result<(), SetupError> {
    let files: [(&str, Vec<u8>); 5] = [
        (
            "/etc/passwd",
            etc::passwd(user, &cfg.extra_users).into_bytes(),
        ),
        (
            "/etc/group",
            etc::group(user, &cfg.extra_users).into_bytes(),
        ),
        ("/etc/nsswitch.conf", etc::NSSWITCH.as_bytes().to_vec()),
        (
            "/etc/hosts",
            std::fs::read("/etc/hosts").unwrap_or_else(|_| b"127.0.0.1 localhost\n".to_vec()),
        ),
        (
            "/etc/resolv.conf",
            std::fs::read("/etc/resolv.conf").unwrap_or_default(),
        ),
    ];
    for (path, contents) in &files {
        a.step(
            format!("writing {path}"),
            a.sys.write_in_root(root, Path::new(path), contents, 0o644),
        )?;
    }
    Ok(())
}

/// One `/etc/ld.so.conf.d/shifter-<module>.conf` per module with library
/// directories, on the writable layer. It takes effect only for a user who
/// rebuilds the cache; `LD_LIBRARY_PATH` (see `env`) is what finds them.
fn write_ld_so_conf(
    a: &mut Assembler<'_>,
    root: &Path,
    modules: &[(&str, &Module)],
) -> Result<(), SetupError> {
    for (name, m) in modules.iter().filter(|(_, m)| !m.ldconfig_dirs.is_empty()) {
        let path = PathBuf::from(format!("/etc/ld.so.conf.d/shifter-{name}.conf"));
        let mut text = format!("# shifter module {name}\n");
        for d in &m.ldconfig_dirs {
            text.push_str(&format!("{}\n", d.display()));
        }
        a.step(
            format!("writing {}", path.display()),
            a.sys.write_in_root(root, &path, text.as_bytes(), 0o644),
        )?;
    }
    Ok(())
}

/// A minimal `/dev`: a small tmpfs with bind-mounted host nodes, a private
/// devpts instance and a `/dev/shm`, all resolved below the new tmpfs itself.
/// The device binds and devpts are the only mounts of the container without
/// `nodev`.
fn mount_dev(
    a: &mut Assembler<'_>,
    ovl: &Handle,
    modules: &[(&str, &Module)],
) -> Result<(), SetupError> {
    let sys = a.sys;
    let dev = a.new_fs_beneath(
        "mounting /dev",
        ovl,
        "/",
        "dev",
        &FsSpec {
            fstype: "tmpfs",
            source: "tmpfs",
            data: "size=64k,mode=0755",
            attrs: MountAttrs::NOSUID_NODEV_NOEXEC,
        },
    )?;
    let node_attrs = MountAttrs {
        rdonly: false,
        nosuid: true,
        nodev: false,
        noexec: true,
    };
    // Callers that select devices (the Slurm plugin) have expanded patterns
    // already; for the others (`shifter`) every match is bound.
    let module_devs = modules
        .iter()
        .flat_map(|(_, m)| crate::config::expand_device_patterns(&m.devices));
    let devices = DEVICES
        .iter()
        .map(|d| PathBuf::from(format!("/dev/{d}")))
        .chain(module_devs);
    for d in devices {
        let step = format!("binding {}", d.display());
        // The config allows only paths below /dev.
        let rel = d
            .strip_prefix("/dev")
            .map_err(|_| SetupError::Redirected {
                what: "device",
                path: d.clone(),
                resolved: d.clone(),
            })?
            .to_string_lossy()
            .into_owned();
        // A module may name a directory of devices (`/dev/dri`): its mount
        // point must be a directory too, or the bind fails with ENOTDIR.
        let (src, kind) = a.step(step.clone(), sys.open_host(&d))?;
        let tree = a.detached_bind(&step, &src, node_attrs, false)?;
        let target = a.system_target(&dev, "/dev", &rel, kind)?;
        a.attach(&step, &tree, &target)?;
    }
    a.new_fs_beneath(
        "mounting /dev/pts",
        &dev,
        "/dev",
        "pts",
        &FsSpec {
            fstype: "devpts",
            source: "devpts",
            data: "newinstance,ptmxmode=0666,mode=0620",
            attrs: MountAttrs {
                nodev: false,
                ..MountAttrs::NOSUID_NODEV_NOEXEC
            },
        },
    )?;
    a.new_fs_beneath(
        "mounting /dev/shm",
        &dev,
        "/dev",
        "shm",
        &FsSpec {
            fstype: "tmpfs",
            source: "tmpfs",
            data: "mode=1777",
            attrs: MountAttrs::NOSUID_NODEV_NOEXEC,
        },
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        a.step(
            format!("linking /dev/{link}"),
            sys.symlink_at(&dev, link, Path::new(target)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, FakeSys};
    use nix::errno::Errno;
    use shifter_api::{ImageId, ImageMeta};

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn cfg(extra: &str) -> Config {
        Config::parse(
            &format!("system = \"c\"\nimage_dir = \"/images\"\nmount_root = \"/run/shifter\"\nupper_size = \"64m\"\n{extra}"),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    fn image() -> CheckedImage {
        CheckedImage::unchecked(
            ImageId::parse(ID).unwrap(),
            PathBuf::from(format!("/images/{ID}.squashfs")),
            std::fs::File::open("/dev/null").unwrap(),
            ImageMeta::default(),
        )
    }

    fn user() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            uid: 1001,
            gid: 1001,
            group_name: "alice".into(),
            groups: vec![],
            home: "/home/alice".into(),
            shell: "/bin/sh".into(),
        }
    }

    fn prepare_with(sys: &FakeSys, c: &Config, vols: &[&str]) -> Result<PreparedRoot, SetupError> {
        let vols = Volume::parse_all(vols).unwrap();
        prepare(
            sys,
            c,
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &[],
                sshd: None,
            },
        )
    }

    fn position(calls: &[Call], what: &str, pred: impl Fn(&Call) -> bool) -> usize {
        calls
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what} in {calls:#?}"))
    }

    fn moved_onto(calls: &[Call], target_suffix: &str) -> usize {
        position(
            calls,
            target_suffix,
            |c| matches!(c, Call::MoveMount { target, .. } if target.ends_with(target_suffix)),
        )
    }

    #[test]
    fn plan_starts_with_a_slave_namespace_then_image_then_overlay_all_built_detached() {
        let sys = FakeSys::new();
        let p = prepare(&sys, &cfg(""), &image(), &user(), &Request::default()).unwrap();
        assert_eq!(p.root, Path::new("/run/shifter/root"));
        assert_eq!(p.loop_device, Path::new("/dev/loop7"));
        let calls = sys.calls();
        assert_eq!(calls[0], Call::UnshareMountNs);
        assert_eq!(
            calls[1],
            Call::Mount {
                source: None,
                target: "/".into(),
                fstype: None,
                flags: MsFlags::MS_SLAVE | MsFlags::MS_REC,
                data: None
            }
        );
        // No path-based mount at all after the propagation change.
        assert_eq!(
            calls
                .iter()
                .filter(|c| matches!(c, Call::Mount { .. }))
                .count(),
            1
        );
        let fs: Vec<(String, String, String, MountAttrs)> = calls
            .iter()
            .filter_map(|c| match c {
                Call::FsMount {
                    fstype,
                    source,
                    data,
                    attrs,
                } => Some((fstype.clone(), source.clone(), data.clone(), *attrs)),
                _ => None,
            })
            .collect();
        assert_eq!(
            fs[0],
            (
                "tmpfs".into(),
                "shifter-upper".into(),
                "size=64m,mode=0755".into(),
                MountAttrs::NOSUID_NODEV
            )
        );
        assert_eq!(
            fs[1],
            (
                "squashfs".into(),
                "/dev/loop7".into(),
                String::new(),
                MountAttrs::NOSUID_NODEV.with_rdonly(true)
            )
        );
        assert_eq!(fs[2].0, "overlay");
        assert_eq!(
            fs[2].2,
            "lowerdir=/run/shifter/lower,upperdir=/run/shifter/upper,workdir=/run/shifter/work"
        );
        assert!(calls.contains(&Call::AttachLoop(format!("/images/{ID}.squashfs").into())));
        let base = moved_onto(&calls, "host-fd:/run/shifter");
        let lower = moved_onto(&calls, "host-fd:/run/shifter/lower");
        let root = moved_onto(&calls, "host-fd:/run/shifter/root");
        assert!(base < lower && lower < root);
    }

    #[test]
    fn every_new_filesystem_and_bind_is_nosuid_and_all_but_device_nodes_are_nodev() {
        let sys = FakeSys::new();
        let c = cfg("tmp = \"host\"\n[[site_fs]]\nsource = \"/home\"\n");
        prepare_with(&sys, &c, &["/scratch:/data:ro"]).unwrap();
        for call in sys.mount_calls() {
            match call {
                Call::FsMount { fstype, attrs, .. } => {
                    assert!(attrs.nosuid, "{fstype} lacks nosuid");
                    assert!(fstype == "devpts" || attrs.nodev, "{fstype} lacks nodev");
                }
                Call::MountSetattr { target, set, .. } => {
                    assert!(set.nosuid, "{}", target.display());
                    let is_dev_node = DEVICES
                        .iter()
                        .any(|d| target == Path::new(&format!("tree:host-fd:/dev/{d}")));
                    assert_eq!(set.nodev, !is_dev_node, "{}", target.display());
                }
                _ => {}
            }
        }
    }

    #[test]
    fn user_volume_is_cloned_flagged_while_detached_then_moved_onto_its_one_resolution() {
        let sys = FakeSys::new();
        prepare_with(&sys, &cfg(""), &["/scratch/alice:/data:ro"]).unwrap();
        let calls = sys.calls();
        let open = position(&calls, "open as user", |c| {
            *c == Call::OpenAsUser {
                path: "/scratch/alice".into(),
                uid: 1001,
            }
        });
        // Opened as the user before anything of ours exists to undo.
        let first_mount = position(&calls, "writable layer", |c| {
            matches!(c, Call::FsMount { .. })
        });
        assert!(
            open < first_mount,
            "source opened after mounting: {calls:#?}"
        );
        // Cloned with every submount (a plain bind would uncover what the
        // host's submounts hide) and flagged, right away.
        assert_eq!(
            calls[open + 1],
            Call::OpenTree {
                source: "user-fd:/scratch/alice".into(),
                recursive: true,
            }
        );
        assert_eq!(
            calls[open + 2],
            Call::MountSetattr {
                target: "tree:user-fd:/scratch/alice".into(),
                set: MountAttrs::NOSUID_NODEV.with_rdonly(true),
                recursive: true
            }
        );
        let resolve = position(
            &calls,
            "destination",
            |c| matches!(c, Call::Resolve { path, .. } if path == Path::new("/data")),
        );
        let tail = &calls[resolve - 1..];
        assert_eq!(
            tail[1],
            Call::Resolve {
                root: "/run/shifter/root".into(),
                path: "/data".into(),
                create: Create::here(NodeKind::Dir),
                on_root_mount: false,
            }
        );
        assert_eq!(
            tail[2],
            Call::MoveMount {
                mount: "tree:user-fd:/scratch/alice".into(),
                target: "/run/shifter/root/data".into()
            }
        );
        // Nothing is looked up again once the user's directory is reachable.
        assert_eq!(tail.len(), 3, "{tail:#?}");
    }

    #[test]
    fn every_volume_gets_flags_on_every_submount_rec_or_not() {
        for spec in ["/scratch:/data:ro,rec", "/scratch:/data:ro"] {
            let sys = FakeSys::new();
            prepare_with(&sys, &cfg(""), &[spec]).unwrap();
            let calls = sys.calls();
            assert!(calls.contains(&Call::OpenTree {
                source: "user-fd:/scratch".into(),
                recursive: true
            }));
            assert!(calls.contains(&Call::MountSetattr {
                target: "tree:user-fd:/scratch".into(),
                set: MountAttrs::NOSUID_NODEV.with_rdonly(true),
                recursive: true
            }));
        }
    }

    #[test]
    fn root_writes_into_the_image_all_happen_before_any_other_mount_exists() {
        let sys = FakeSys::new();
        let mut c = cfg("enable_sshd = true\n[sshd]\nkey_secret = \"/etc/shifter/k\"\n[[site_fs]]\nsource = \"/home\"\n[modules.gpu]\nldconfig_dirs = [\"/opt/nv/lib\"]\n");
        c.sshd.listen_address = "127.0.0.1".into();
        // sshd's job directory is written with std::fs on the host side, and
        // handed to the user: here the user is whoever runs the test.
        let dir = tempfile::tempdir().unwrap();
        c.mount_root = dir.path().to_owned();
        let me = UserInfo {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            ..user()
        };
        let plan = sshd::plan_from_secret(&c, b"0123456789abcdef", &me, 7, "n1").unwrap();
        let mods = c.resolve_modules(Some(&["gpu".into()])).unwrap();
        let vols = Volume::parse_all(&["/scratch:/data"]).unwrap();
        prepare(
            &sys,
            &c,
            &image(),
            &me,
            &Request {
                volumes: &vols,
                modules: &mods,
                sshd: Some(&plan),
            },
        )
        .unwrap();
        let calls = sys.calls();
        let overlay = moved_onto(&calls, "root");
        let writes: Vec<usize> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Call::Write { .. } | Call::Symlink { .. }))
            .filter(|(_, c)| !matches!(c, Call::Symlink { path, .. } if path.to_string_lossy().starts_with("fs:tmpfs")))
            .map(|(i, _)| i)
            .collect();
        let written: Vec<String> = writes
            .iter()
            .filter_map(|i| match &calls[*i] {
                Call::Write { path, .. } => Some(path.display().to_string()),
                _ => None,
            })
            .collect();
        for want in [
            "etc/passwd",
            "etc/ld.so.conf.d/shifter-gpu.conf",
            "etc/ssh/ssh_config",
        ] {
            assert!(
                written.iter().any(|w| w.ends_with(want)),
                "{want} in {written:?}"
            );
        }
        let next_mount = overlay
            + 1
            + calls[overlay + 1..]
                .iter()
                .position(|c| matches!(c, Call::FsMount { .. } | Call::OpenTree { .. }))
                .unwrap();
        for i in writes {
            assert!(
                overlay < i && i < next_mount,
                "write {:?} is not between the overlay and the first other mount",
                calls[i]
            );
        }
        // sshd's tools and the job directory are bound before the user's volume.
        let tools = moved_onto(&calls, "opt/udiImage/sshd");
        let data = moved_onto(&calls, "data");
        assert!(tools < data);
        // The job directory: made beneath the step's own tmpfs (no symlink,
        // no other mount), its files created new through that descriptor and
        // owned by the user, the directory given to the user by descriptor,
        // and the clone bound from that same descriptor.
        let job_dir = position(&calls, "sshd job dir", |c| {
            *c == Call::OpenBeneath {
                dir: "fs:tmpfs:shifter-upper".into(),
                rel: "sshd".into(),
                create: Create::here(NodeKind::Dir),
            }
        });
        type Owner = Option<(u32, u32)>;
        let job_files: Vec<(String, u32, Owner)> = calls
            .iter()
            .filter_map(|c| match c {
                Call::WriteAt {
                    path, mode, owner, ..
                } => Some((path.display().to_string(), *mode, *owner)),
                _ => None,
            })
            .collect();
        assert_eq!(job_files.len(), 8, "{job_files:?}");
        for (path, mode, owner) in &job_files {
            assert!(path.starts_with("fs:tmpfs:shifter-upper/sshd/"), "{path}");
            assert_eq!(*owner, Some((me.uid, me.gid)), "{path}");
            let private = path.ends_with("_key") || path.ends_with("id_ed25519");
            assert_eq!(*mode, if private { 0o600 } else { 0o644 }, "{path}");
        }
        assert!(calls.contains(&Call::ChownDir {
            path: "fs:tmpfs:shifter-upper/sshd".into(),
            uid: me.uid,
            gid: me.gid,
            mode: 0o700
        }));
        assert!(job_dir < tools);
        assert!(calls.contains(&Call::OpenTree {
            source: "fs:tmpfs:shifter-upper/sshd".into(),
            recursive: false
        }));
    }

    #[test]
    fn system_paths_are_opened_beneath_their_own_mount_and_never_by_path() {
        let sys = FakeSys::new();
        prepare(&sys, &cfg(""), &image(), &user(), &Request::default()).unwrap();
        let beneath: Vec<(String, String)> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::OpenBeneath { dir, rel, create } => {
                    assert!(create.is_some());
                    Some((dir.display().to_string(), rel.display().to_string()))
                }
                _ => None,
            })
            .collect();
        for (dir, rel) in [
            ("fs:overlay:overlay", "proc"),
            ("fs:overlay:overlay", "sys"),
            ("fs:overlay:overlay", "dev"),
            ("fs:overlay:overlay", "tmp"),
            ("fs:tmpfs:tmpfs", "null"),
            ("fs:tmpfs:tmpfs", "pts"),
            ("fs:tmpfs:tmpfs", "shm"),
        ] {
            assert!(
                beneath.contains(&(dir.into(), rel.into())),
                "{dir} {rel} in {beneath:?}"
            );
        }
    }

    #[test]
    fn an_image_symlink_at_a_system_path_is_refused_with_the_path_named() {
        let sys = FakeSys::new();
        sys.fail_when(
            Errno::ELOOP,
            |c| matches!(c, Call::OpenBeneath { rel, .. } if rel == Path::new("proc")),
        );
        let err = prepare(&sys, &cfg(""), &image(), &user(), &Request::default()).unwrap_err();
        assert!(matches!(err, SetupError::Diverted { .. }), "{err}");
        assert!(err.to_string().contains("/proc"), "{err}");
        assert!(err.to_string().contains("plain directory"), "{err}");
    }

    #[test]
    fn a_module_destination_an_image_symlink_leads_onto_another_mount_is_refused() {
        let sys = FakeSys::new();
        sys.fail_when(Errno::EXDEV, |c| {
            matches!(c, Call::Resolve { path, on_root_mount: true, .. } if path == Path::new("/opt/shifter/gpu"))
        });
        let c = cfg("[modules.gpu]\nmounts = [{ source = \"/opt/nv\", destination = \"/opt/shifter/gpu\" }]\n");
        let mods = c.resolve_modules(Some(&["gpu".into()])).unwrap();
        let err = prepare(
            &sys,
            &c,
            &image(),
            &user(),
            &Request {
                volumes: &[],
                modules: &mods,
                sshd: None,
            },
        )
        .unwrap_err();
        assert!(matches!(err, SetupError::Diverted { .. }), "{err}");
        assert!(err.to_string().contains("/opt/shifter/gpu"), "{err}");
    }

    #[test]
    fn a_module_destination_below_the_private_tmp_is_created_on_that_fresh_tmpfs() {
        let sys = FakeSys::new();
        let c = cfg("[modules.pmix]\nmounts = [{ source = \"/tmp/spool\" }]\n");
        let mods = c.resolve_modules(Some(&["pmix".into()])).unwrap();
        prepare(
            &sys,
            &c,
            &image(),
            &user(),
            &Request {
                volumes: &[],
                modules: &mods,
                sshd: None,
            },
        )
        .unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&Call::OpenBeneath {
            dir: "fs:tmpfs:tmpfs".into(),
            rel: "spool".into(),
            create: Create::here(NodeKind::Dir)
        }));
        assert!(!calls
            .iter()
            .any(|c| matches!(c, Call::Resolve { path, .. } if path.starts_with("/tmp"))));
    }

    #[test]
    fn forbidden_volume_is_refused_before_anything_is_mounted() {
        let sys = FakeSys::new();
        let err = prepare_with(&sys, &cfg(""), &["/scratch:/etc/x"]).unwrap_err();
        assert!(
            matches!(err, SetupError::Volume(VolumeError::Forbidden { .. })),
            "{err}"
        );
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn unreadable_volume_source_is_reported_as_the_users_problem() {
        let sys = FakeSys::new();
        sys.fail_when(Errno::EACCES, |c| matches!(c, Call::OpenAsUser { .. }));
        let err = prepare_with(&sys, &cfg(""), &["/root:/data"]).unwrap_err();
        assert!(
            matches!(
                err,
                SetupError::VolumeSource {
                    errno: Errno::EACCES,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("/root"), "{err}");
    }

    /// After a failure: exactly one lazy detach of the step's tmpfs, which
    /// takes every mount below it, and nothing after it.
    #[track_caller]
    fn assert_rolled_back_at_once(calls: &[Call]) {
        let umounts: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::Umount { .. }))
            .collect();
        assert_eq!(
            umounts,
            vec![&Call::Umount {
                target: "/run/shifter".into(),
                flags: MntFlags::MNT_DETACH
            }]
        );
        assert!(matches!(calls.last(), Some(Call::Umount { .. })));
    }

    #[test]
    fn failure_midway_detaches_the_whole_tree_at_once() {
        let sys = FakeSys::new();
        sys.fail_when(
            Errno::ENOMEM,
            |c| matches!(c, Call::FsMount { fstype, .. } if fstype == "sysfs"),
        );
        let err = prepare(&sys, &cfg(""), &image(), &user(), &Request::default()).unwrap_err();
        assert!(err.to_string().contains("mounting /sys"), "{err}");
        assert_rolled_back_at_once(&sys.calls());
    }

    #[test]
    fn failure_before_the_writable_layer_exists_unmounts_nothing() {
        let sys = FakeSys::new();
        sys.fail_when(
            Errno::ENOMEM,
            |c| matches!(c, Call::FsMount { fstype, .. } if fstype == "tmpfs"),
        );
        prepare(&sys, &cfg(""), &image(), &user(), &Request::default()).unwrap_err();
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::Umount { .. })));
    }

    #[test]
    fn failed_volume_bind_rolls_back_the_whole_root() {
        let sys = FakeSys::new();
        sys.fail_when(
            Errno::EPERM,
            |c| matches!(c, Call::MoveMount { target, .. } if target.ends_with("data")),
        );
        prepare_with(&sys, &cfg(""), &["/scratch:/data"]).unwrap_err();
        assert_rolled_back_at_once(&sys.calls());
    }

    #[test]
    fn volume_source_that_cannot_be_cloned_fails_before_anything_is_mounted() {
        let sys = FakeSys::new();
        sys.fail_when(
            Errno::EPERM,
            |c| matches!(c, Call::MountSetattr { target, .. } if target.ends_with("scratch")),
        );
        prepare_with(&sys, &cfg(""), &["/scratch:/data"]).unwrap_err();
        let calls = sys.calls();
        assert!(
            !calls.iter().any(|c| matches!(c, Call::FsMount { .. })),
            "{calls:#?}"
        );
        assert!(
            !calls.iter().any(|c| matches!(c, Call::Umount { .. })),
            "{calls:#?}"
        );
    }

    #[test]
    fn volume_destination_missing_inside_another_mount_is_not_created_by_root() {
        let sys = FakeSys::new();
        sys.fail_when(Errno::EXDEV, |c| {
            matches!(c, Call::Resolve { path, on_root_mount: false, .. }
                if path == Path::new("/home/bob/new"))
        });
        let c = cfg("[[site_fs]]\nsource = \"/home\"\n");
        let err = prepare_with(&sys, &c, &["/scratch:/home/bob/new"]).unwrap_err();
        assert!(
            matches!(err, SetupError::DestinationOnHostMount { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("create it there yourself first"),
            "{err}"
        );
        // The site mount itself stays on the root's own mount.
        assert!(sys.calls().iter().any(
            |c| matches!(c, Call::Resolve { path, on_root_mount: true, .. }
            if path == Path::new("/home"))
        ));
    }

    #[test]
    fn corrupt_image_gives_a_clear_error() {
        let sys = FakeSys::new();
        sys.fail_when(
            Errno::EINVAL,
            |c| matches!(c, Call::FsMount { fstype, .. } if fstype == "squashfs"),
        );
        let err = prepare(&sys, &cfg(""), &image(), &user(), &Request::default()).unwrap_err();
        assert!(
            err.to_string().contains("not a valid squashfs image"),
            "{err}"
        );
    }

    #[test]
    fn generated_etc_names_the_user_and_minimal_dev_is_built() {
        let sys = FakeSys::new();
        prepare(&sys, &cfg(""), &image(), &user(), &Request::default()).unwrap();
        let calls = sys.calls();
        let passwd = calls
            .iter()
            .find_map(|c| match c {
                Call::Write {
                    path,
                    contents,
                    mode,
                } if path.ends_with("etc/passwd") => Some((contents.clone(), *mode)),
                _ => None,
            })
            .unwrap();
        assert!(passwd.0.contains("alice:x:1001:1001:"));
        assert_eq!(passwd.1, 0o644);
        for d in DEVICES {
            assert!(
                calls.contains(&Call::OpenHost(format!("/dev/{d}").into())),
                "{d}"
            );
        }
        assert!(calls.contains(&Call::Symlink {
            path: "fs:tmpfs:tmpfs/ptmx".into(),
            target: "pts/ptmx".into()
        }));
        assert!(calls
            .iter()
            .any(|c| matches!(c, Call::FsMount { fstype, data, .. }
            if fstype == "tmpfs" && data == "size=1g,mode=1777")));
    }

    #[test]
    fn module_library_dirs_are_listed_in_an_ld_so_conf_file_per_module() {
        let sys = FakeSys::new();
        let c = cfg("[modules.gpu]\nldconfig_dirs = [\"/opt/nv/lib\", \"/opt/nv/lib64\"]\n[modules.plain]\n");
        let mods = c
            .resolve_modules(Some(&["gpu".into(), "plain".into()]))
            .unwrap();
        let req = Request {
            volumes: &[],
            modules: &mods,
            sshd: None,
        };
        prepare(&sys, &c, &image(), &user(), &req).unwrap();
        let confs: Vec<(PathBuf, String)> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Write { path, contents, .. }
                    if path.to_string_lossy().contains("ld.so.conf.d") =>
                {
                    Some((path, contents))
                }
                _ => None,
            })
            .collect();
        assert_eq!(confs.len(), 1, "{confs:?}");
        assert_eq!(
            confs[0].0,
            Path::new("/run/shifter/root/etc/ld.so.conf.d/shifter-gpu.conf")
        );
        assert!(
            confs[0].1.ends_with("/opt/nv/lib\n/opt/nv/lib64\n"),
            "{}",
            confs[0].1
        );
    }

    #[test]
    fn a_module_device_directory_gets_a_directory_mount_point_and_nodes_get_files() {
        let sys = FakeSys::new();
        for d in DEVICES {
            sys.set_kind(format!("/dev/{d}"), NodeKind::File);
        }
        sys.set_kind("/dev/nvidia0", NodeKind::File);
        sys.set_kind("/dev/dri", NodeKind::Dir);
        let c = cfg("[modules.gpu]\ndevices = [\"/dev/nvidia0\", \"/dev/dri\"]\n");
        let mods = c.resolve_modules(Some(&["gpu".into()])).unwrap();
        prepare(
            &sys,
            &c,
            &image(),
            &user(),
            &Request {
                volumes: &[],
                modules: &mods,
                sshd: None,
            },
        )
        .unwrap();
        let created = |rel: &str| {
            sys.calls().into_iter().find_map(|c| match c {
                Call::OpenBeneath { rel: r, create, .. } if r == Path::new(rel) => create,
                _ => None,
            })
        };
        assert_eq!(created("dri"), Create::here(NodeKind::Dir));
        assert_eq!(created("nvidia0"), Create::here(NodeKind::File));
        assert_eq!(created("null"), Create::here(NodeKind::File));
    }

    #[test]
    fn site_and_module_mounts_come_before_user_volumes() {
        let sys = FakeSys::new();
        let c = cfg(
            "[[site_fs]]\nsource = \"/home\"\n[modules.gpu]\ndevices = [\"/dev/nvidia0\"]\nmounts = [{ source = \"/opt/nv\", read_only = true }]\n",
        );
        let mods = c.resolve_modules(Some(&["gpu".into()])).unwrap();
        let vols = Volume::parse_all(&["/scratch:/data"]).unwrap();
        prepare(
            &sys,
            &c,
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &mods,
                sshd: None,
            },
        )
        .unwrap();
        let binds: Vec<String> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::MoveMount { mount, target }
                    if mount.to_string_lossy().starts_with("tree:") =>
                {
                    Some(target.display().to_string())
                }
                _ => None,
            })
            .collect();
        let pos = |s: &str| {
            binds
                .iter()
                .position(|b| b.ends_with(s))
                .unwrap_or_else(|| panic!("{s} in {binds:?}"))
        };
        assert!(pos("/nvidia0") < pos("/home"));
        assert!(pos("/home") < pos("/opt/nv"));
        assert!(pos("/opt/nv") < pos("/data"));
        let nv_ro = sys.calls().into_iter().any(|c| {
            matches!(c, Call::MountSetattr { target, set, .. }
            if target.ends_with("opt/nv") && set.rdonly)
        });
        assert!(nv_ro);
    }

    const CACHE_CFG: &str = "[per_node_cache]\ndir = \"/var/cache/shifter\"\nmax_size = \"4G\"\n";

    fn prepare_cache(sys: &FakeSys, spec: &str) -> Result<PreparedRoot, SetupError> {
        let vols = Volume::parse_all(&[spec]).unwrap();
        prepare(
            sys,
            &cfg(CACHE_CFG),
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &[],
                sshd: None,
            },
        )
    }

    const CACHE_SPEC: &str = "/var/cache/shifter:/cache:perNodeCache=size=2G";

    #[test]
    fn per_node_cache_is_formatted_mounted_nosuid_nodev_and_given_to_the_user_before_it_is_attached(
    ) {
        let sys = FakeSys::new();
        let p = prepare_cache(&sys, CACHE_SPEC).unwrap();
        assert!(p.mounts.contains(&PathBuf::from("/run/shifter/root/cache")));
        let calls = sys.calls();
        let at = position(&calls, "cache dir", |c| {
            *c == Call::OpenPrivateDir("/var/cache/shifter".into())
        });
        // The destination was resolved (created on the writable layer) first.
        assert_eq!(
            calls[at - 1],
            Call::Resolve {
                root: "/run/shifter/root".into(),
                path: "/cache".into(),
                create: Create::here(NodeKind::Dir),
                on_root_mount: false
            }
        );
        let tail = &calls[at..];
        assert!(matches!(&tail[1], Call::CreateSparse { size, .. } if *size == 2 << 30));
        assert!(matches!(&tail[2], Call::AttachLoopRw(_)));
        assert!(matches!(&tail[3], Call::Unlink(_)));
        assert!(matches!(&tail[4], Call::RunTool(argv) if argv.last().unwrap() == "/dev/loop8"));
        assert_eq!(
            tail[5],
            Call::FsMount {
                fstype: "xfs".into(),
                source: "/dev/loop8".into(),
                data: String::new(),
                attrs: MountAttrs::NOSUID_NODEV
            }
        );
        // Ownership goes to the new filesystem's own root, by its descriptor,
        // while it is attached nowhere.
        assert_eq!(
            tail[6],
            Call::ChownDir {
                path: "fs:xfs:/dev/loop8".into(),
                uid: 1001,
                gid: 1001,
                mode: 0o700
            }
        );
        assert_eq!(
            tail[7],
            Call::MoveMount {
                mount: "fs:xfs:/dev/loop8".into(),
                target: "/run/shifter/root/cache".into()
            }
        );
        assert_eq!(
            tail.len(),
            8,
            "nothing after the cache is attached: {tail:#?}"
        );
    }

    #[test]
    fn the_users_cache_lock_is_taken_before_anything_is_counted_or_made() {
        let sys = FakeSys::new();
        prepare_cache(&sys, CACHE_SPEC).unwrap();
        let calls = sys.calls();
        // The lock comes first: the count of attached caches that follows it
        // (from sysfs) must not be overtaken by another setup of this user.
        assert_eq!(
            calls[..2],
            [
                Call::OpenPrivateDir(crate::per_node_cache::LOCK_DIR.into()),
                Call::LockFile(Path::new(crate::per_node_cache::LOCK_DIR).join("cache-u1001.lock")),
            ]
        );
        // No lock for a request without caches.
        let sys = FakeSys::new();
        prepare_cache(&sys, "/home/alice:/data").unwrap();
        assert!(!sys.calls().iter().any(|c| matches!(c, Call::LockFile(_))));
    }

    #[test]
    fn a_cache_lock_held_too_long_is_refused_naming_what_to_do() {
        let sys = FakeSys::new();
        sys.fail_when(Errno::EWOULDBLOCK, |c| matches!(c, Call::LockFile(_)));
        let err = prepare_cache(&sys, CACHE_SPEC).unwrap_err().to_string();
        assert!(err.contains("held the per-user cache lock"), "{err}");
        assert!(err.contains("let it finish"), "{err}");
        assert!(!sys
            .calls()
            .iter()
            .any(|c| matches!(c, Call::CreateSparse { .. } | Call::UnshareMountNs)));
    }

    #[test]
    fn per_node_cache_outside_the_allowed_dirs_is_refused_before_anything_runs() {
        let sys = FakeSys::new();
        let err = prepare_cache(&sys, "/home/alice:/cache:perNodeCache=size=2G").unwrap_err();
        assert!(
            err.to_string().contains("use one of: /var/cache/shifter"),
            "{err}"
        );
        assert!(sys.calls().is_empty());
        let err =
            prepare_cache(&sys, "/var/cache/shifter:/cache:perNodeCache=size=8G").unwrap_err();
        assert!(
            err.to_string().contains("above the site's maximum of 4G"),
            "{err}"
        );
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn per_node_cache_failure_at_each_step_leaves_no_file_mount_or_device() {
        type Pred = fn(&Call) -> bool;
        let steps: [(&str, Pred); 8] = [
            (
                "resolve",
                |c| matches!(c, Call::Resolve { path, .. } if path == Path::new("/cache")),
            ),
            (
                "mkdir",
                |c| matches!(c, Call::OpenPrivateDir(p) if p == Path::new("/var/cache/shifter")),
            ),
            ("create", |c| matches!(c, Call::CreateSparse { .. })),
            ("attach", |c| matches!(c, Call::AttachLoopRw(_))),
            ("mkfs", |c| matches!(c, Call::RunTool(_))),
            (
                "fsmount",
                |c| matches!(c, Call::FsMount { fstype, .. } if fstype == "xfs"),
            ),
            ("chown", |c| matches!(c, Call::ChownDir { .. })),
            (
                "move",
                |c| matches!(c, Call::MoveMount { target, .. } if target.ends_with("cache")),
            ),
        ];
        for (name, pred) in steps {
            let sys = FakeSys::new();
            sys.fail_when(Errno::EIO, pred);
            prepare_cache(&sys, CACHE_SPEC).expect_err(name);
            let calls = sys.calls();
            let created =
                calls.iter().any(|c| matches!(c, Call::CreateSparse { .. })) && name != "create";
            let unlinked = calls.iter().any(|c| matches!(c, Call::Unlink(_)));
            assert_eq!(
                created, unlinked,
                "{name}: backing file removed iff created"
            );
            assert_rolled_back_at_once(&calls);
        }
    }
}
