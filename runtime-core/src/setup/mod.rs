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
//!
//! The setup is split so that each privileged step is one small function:
//! [`assembler`] holds the primitives (detached mounts onto checked
//! descriptors, the one rollback); this file orders the phases.

mod assembler;
mod cache;
mod dev;
mod etc_files;
mod volumes;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Instant;

use thiserror::Error;

use crate::config::{Config, Module, TmpMode};
use crate::image::CheckedImage;
pub use crate::prepared::PreparedRoot;
use crate::sshd;
use crate::sys::{FsSpec, Handle, MountAttrs, MsFlags, NodeKind, SysError};
use crate::user::UserInfo;
use crate::volume::{DestinationPolicy, Volume, VolumeError};

use assembler::{Assembler, Layout};
pub use dev::DEVICES;

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

/// Everything `prepare` needs besides the config and the image.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub volumes: &'a [Volume],
    /// Modules already resolved with [`Config::resolve_modules`].
    pub modules: &'a [(&'a str, &'a Module)],
    /// The job's sshd (`enable_sshd`), from [`sshd::plan`].
    pub sshd: Option<&'a sshd::Plan>,
}

/// Builds the container root for `user` from a checked image.
///
/// Call as root, single-threaded, once per step (the Slurm plugin) or once per
/// `shifter` run. It unshares the mount namespace of the calling process, so
/// nothing it mounts is visible on the host and everything goes away with the
/// last process of the namespace.
pub fn prepare(
    sys: &dyn crate::sys::Sys,
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

/// The phases in order; each is its own function below (or in a submodule).
fn assemble(
    a: &mut Assembler<'_>,
    cfg: &Config,
    image: &CheckedImage,
    user: &UserInfo,
    req: &Request<'_>,
) -> Result<PreparedRoot, SetupError> {
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
    let _cache_lock = cache::reserve_cache_totals(a.sys, cfg, user, req.volumes)?;
    let l = Layout::new(&cfg.mount_root);

    enter_private_namespace(a)?;
    let sources = volumes::detach_volume_sources(a, user, req.volumes)?;
    let base_fs = mount_writable_layer(a, cfg, &l)?;
    let (ovl, loop_device) = mount_image_and_overlay(a, image, &l)?;
    let root = l.root.as_path();

    // Root's writes into the image's root, while the overlay is the only
    // mount in it: /etc identity files and the host's name resolution,
    // module library lists, sshd's client config.
    etc_files::write_etc(a, cfg, root, user)?;
    etc_files::write_ld_so_conf(a, root, req.modules)?;
    if let Some(plan) = req.sshd {
        sshd::write_root_files(a.sys, cfg, root, user, plan)?;
    }

    mount_kernel_filesystems(a, &ovl)?;
    dev::mount_dev(a, &ovl, req.modules)?;
    mount_tmp(a, cfg, &ovl)?;
    mount_site_and_modules(a, cfg, root, req.modules)?;
    if let Some(plan) = req.sshd {
        mount_sshd(a, cfg, root, &base_fs, user, plan)?;
    }
    // User volumes last: from here on, directories the user controls are
    // reachable inside the root, and root only ever mounts prepared,
    // detached mounts onto descriptors.
    volumes::attach_user_volumes(a, cfg, root, user, req.volumes, sources, &policy)?;

    Ok(PreparedRoot {
        root: l.root.clone(),
        loop_device,
        mounts: a.mounted.clone(),
    })
}

/// A new mount namespace whose `/` is a slave: host unmounts still reach
/// us, our mounts never reach the host.
fn enter_private_namespace(a: &Assembler<'_>) -> Result<(), SetupError> {
    a.step("new mount namespace", a.sys.unshare_mount_ns())?;
    a.step(
        "making / a slave mount",
        a.sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None,
        ),
    )
}

/// One size-capped tmpfs at `mount_root` holds the overlay's upper and work
/// dirs (and sshd's job directory), so the writable layer is bounded and
/// vanishes with the namespace. Returns that tmpfs's root.
fn mount_writable_layer(
    a: &mut Assembler<'_>,
    cfg: &Config,
    l: &Layout,
) -> Result<Handle, SetupError> {
    let sys = a.sys;
    a.step("creating mount_root", sys.mkdir_all(&l.base, 0o755))?;
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
    Ok(base_fs)
}

/// The image's squashfs, read-only through a loop device attached to the
/// checked descriptor, under an overlay onto the writable layer. Returns the
/// overlay's root and the loop device's path.
fn mount_image_and_overlay(
    a: &mut Assembler<'_>,
    image: &CheckedImage,
    l: &Layout,
) -> Result<(Handle, PathBuf), SetupError> {
    let sys = a.sys;
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
    Ok((ovl, loop_path))
}

/// Fresh `/proc` (noexec) and read-only `/sys`, beneath the overlay's root.
fn mount_kernel_filesystems(a: &mut Assembler<'_>, ovl: &Handle) -> Result<(), SetupError> {
    a.new_fs_beneath(
        "mounting /proc",
        ovl,
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
        ovl,
        "/",
        "sys",
        &FsSpec {
            fstype: "sysfs",
            source: "sysfs",
            data: "",
            attrs: MountAttrs::NOSUID_NODEV_NOEXEC.with_rdonly(true),
        },
    )?;
    Ok(())
}

/// A private, size-capped `/tmp` (where admin destinations below it are
/// then created), or the host's `/tmp` bound.
fn mount_tmp(a: &mut Assembler<'_>, cfg: &Config, ovl: &Handle) -> Result<(), SetupError> {
    match cfg.tmp {
        TmpMode::Private => {
            let data = format!("size={},mode=1777", cfg.tmp_size);
            let tmp = a.new_fs_beneath(
                "mounting /tmp",
                ovl,
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
            let (src, _) = a.step(step, a.sys.open_host(Path::new("/tmp")))?;
            let tree = a.detached_bind(step, &src, MountAttrs::NOSUID_NODEV, false)?;
            let target = a.system_target(ovl, "/", "tmp", NodeKind::Dir)?;
            a.attach(step, &tree, &target)?;
        }
    }
    Ok(())
}

/// The site's mounts, then the enabled modules' mounts, in config order.
fn mount_site_and_modules(
    a: &mut Assembler<'_>,
    cfg: &Config,
    root: &Path,
    modules: &[(&str, &Module)],
) -> Result<(), SetupError> {
    for m in &cfg.site_fs {
        a.site_mount(
            &format!("site mount {}", m.destination().display()),
            root,
            m,
        )?;
    }
    for (name, module) in modules {
        for m in &module.mounts {
            a.site_mount(
                &format!("module {name} mount {}", m.destination().display()),
                root,
                m,
            )?;
        }
    }
    Ok(())
}

/// sshd's job directory (written on the writable layer's tmpfs by
/// descriptor) and the host's tools, bound under `/opt/udiImage`.
fn mount_sshd(
    a: &mut Assembler<'_>,
    cfg: &Config,
    root: &Path,
    base_fs: &Handle,
    user: &UserInfo,
    plan: &sshd::Plan,
) -> Result<(), SetupError> {
    let sys = a.sys;
    let job_dir = sshd::write_job_dir(sys, base_fs, user, plan)?;
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
    a.attach(&step, &tree, &target)
}
