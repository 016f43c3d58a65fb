//! Assembling the container root (design §4, steps 2–5), as root, in a new
//! private mount namespace. Everything goes through [`Sys`]; on any error the
//! mounts made so far are detached in reverse order before returning.

use std::path::{Path, PathBuf};
use std::time::Instant;

use thiserror::Error;

use crate::config::{Config, Module, SiteMount, TmpMode};
use crate::etc;
use crate::image::CheckedImage;
use crate::sys::{Create, MntFlags, MountAttrs, MsFlags, NodeKind, Sys, SysError};
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
    #[error("{what} {path} resolved to {resolved} inside the container, which is not allowed")]
    Redirected {
        what: &'static str,
        path: PathBuf,
        resolved: PathBuf,
    },
}

/// A container root ready to be entered, in the calling process's mount namespace.
#[derive(Debug, Clone)]
pub struct PreparedRoot {
    /// The assembled root, as a path in this mount namespace.
    pub root: PathBuf,
    /// The loop device holding the image (auto-cleared when unmounted).
    pub loop_device: PathBuf,
    /// Mount points made, in order (for diagnostics).
    pub mounts: Vec<PathBuf>,
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
}

struct Assembler<'a> {
    sys: &'a dyn Sys,
    mounted: Vec<PathBuf>,
}

fn container_path(root: &Path, host: &Path) -> Option<PathBuf> {
    host.strip_prefix(root)
        .ok()
        .map(|rel| Path::new("/").join(rel))
}

impl Assembler<'_> {
    fn step<T>(&self, step: impl Into<String>, r: Result<T, SysError>) -> Result<T, SetupError> {
        r.map_err(|source| SetupError::Sys {
            step: step.into(),
            cause: source,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn mount(
        &mut self,
        step: &str,
        source: Option<&Path>,
        target: &Path,
        shown: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), SetupError> {
        self.step(step, self.sys.mount(source, target, fstype, flags, data))?;
        self.mounted.push(shown.to_owned());
        Ok(())
    }

    /// Resolves `path` inside `root`, creating it, and insists that it stays
    /// where it was named (system mounts must not be redirected by image symlinks).
    fn exact_target(
        &self,
        root: &Path,
        path: &str,
        kind: NodeKind,
    ) -> Result<crate::sys::Handle, SetupError> {
        let h = self.step(
            format!("creating {path} in the container"),
            // System paths may cross our own mounts (/dev/pts under /dev); the
            // exactness check below keeps image symlinks from redirecting them.
            self.sys
                .resolve_in_root(root, Path::new(path), Create::anywhere(kind)),
        )?;
        let resolved = container_path(root, h.host_path());
        if resolved.as_deref() != Some(Path::new(path)) {
            return Err(SetupError::Redirected {
                what: "system path",
                path: path.into(),
                resolved: resolved.unwrap_or_else(|| h.host_path().to_owned()),
            });
        }
        Ok(h)
    }

    /// Opens (creating it as `create` says) `dest` inside `root`; returns it and
    /// where it resolved to as the container sees it. A user's destination must
    /// not resolve onto a host mount.
    fn resolve_destination(
        &self,
        step: &str,
        root: &Path,
        dest: &Path,
        create: Option<Create>,
        users: bool,
    ) -> Result<(crate::sys::Handle, PathBuf), SetupError> {
        let target = match self.sys.resolve_in_root(root, dest, create) {
            Err(e) if users && e.errno == nix::errno::Errno::EXDEV => {
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
        Ok((target, resolved))
    }

    /// Binds an already opened source onto `dest` inside `root`, then applies
    /// the flags the kernel ignores on the first bind (and, with `recursive`,
    /// on every submount) with `mount_setattr`.
    #[allow(clippy::too_many_arguments)]
    fn bind(
        &mut self,
        step: &str,
        root: &Path,
        source: &crate::sys::Handle,
        kind: NodeKind,
        dest: &Path,
        attrs: MountAttrs,
        recursive: bool,
        policy: Option<&DestinationPolicy>,
    ) -> Result<(), SetupError> {
        // A user's destination is only created on the container's own
        // writable layer; site and module mounts are the admin's choice.
        let create = if policy.is_some() {
            Create::here(kind)
        } else {
            Create::anywhere(kind)
        };
        let (target, resolved) =
            self.resolve_destination(step, root, dest, create, policy.is_some())?;
        if let Some(p) = policy {
            p.check(&resolved)?;
        }
        let mut flags = MsFlags::MS_BIND;
        if recursive {
            flags |= MsFlags::MS_REC;
        }
        let shown = target.host_path().to_owned();
        self.mount(
            step,
            Some(source.path()),
            target.path(),
            &shown,
            None,
            flags,
            None,
        )?;
        // The old handle still names the directory under the new mount;
        // reopen so the attributes land on the bind itself.
        let top = self.step(
            format!("{step}: reopening {}", dest.display()),
            self.sys.resolve_in_root(root, dest, None),
        )?;
        self.step(
            format!("{step}: remounting {} {attrs:?}", dest.display()),
            self.sys.mount_setattr(&top, attrs, recursive),
        )
    }

    #[allow(clippy::too_many_arguments)]
    /// Makes a per-node cache and mounts it at `v.destination` (resolved and
    /// checked like a bind destination), owned by the user, mode 0700.
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
        let (target, resolved) =
            self.resolve_destination(&step, root, dest, Create::here(NodeKind::Dir), true)?;
        policy.check(&resolved)?;
        let formatted =
            crate::per_node_cache::format(self.sys, cache_cfg, &v.source, dest, req, index)?;
        let shown = target.host_path().to_owned();
        self.mount(
            &step,
            Some(&formatted.device.path),
            target.path(),
            &shown,
            Some("xfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None,
        )?;
        // The mount holds the device now; our descriptor can go.
        drop(formatted);
        let top = self.step(
            format!("{step}: reopening {}", dest.display()),
            self.sys.resolve_in_root(root, dest, None),
        )?;
        self.step(
            format!("{step}: giving it to uid {}", user.uid),
            self.sys.chown_dir(&top, user.uid, user.gid, 0o700),
        )
    }

    fn site_mount(&mut self, step: &str, root: &Path, m: &SiteMount) -> Result<(), SetupError> {
        let (src, kind) = self.step(
            format!("{step}: opening {}", m.source.display()),
            self.sys.open_host(&m.source),
        )?;
        let attrs = MountAttrs::NOSUID_NODEV.with_rdonly(m.read_only);
        self.bind(
            step,
            root,
            &src,
            kind,
            m.destination(),
            attrs,
            m.recursive,
            None,
        )
    }

    fn rollback(&mut self) {
        for target in self.mounted.drain(..).rev() {
            if let Err(e) = self.sys.umount(&target, MntFlags::MNT_DETACH) {
                tracing::warn!(error = %e, "rollback: could not detach {}", target.display());
            }
        }
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
        mounted: Vec::new(),
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
    a.step("creating mount_root", sys.mkdir_all(&l.base, 0o755))?;
    // One size-capped tmpfs holds the overlay's upper and work dirs, so the
    // writable layer is bounded and vanishes with the namespace.
    let data = format!("size={},mode=0755", cfg.upper_size);
    a.mount(
        "mounting the writable layer",
        Some(Path::new("shifter-upper")),
        &l.base,
        &l.base,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&data),
    )?;
    for d in [&l.lower, &l.upper, &l.work, &l.root] {
        a.step("creating layout", sys.mkdir_all(d, 0o755))?;
    }

    let loopdev = a.step(
        "attaching the image to a loop device",
        sys.attach_loop(image.squashfs()),
    )?;
    match sys.mount(
        Some(&loopdev.path),
        &l.lower,
        Some("squashfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    ) {
        Ok(()) => a.mounted.push(l.lower.clone()),
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
    }
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
    a.mount(
        "mounting the overlay root",
        Some(Path::new("overlay")),
        &l.root,
        &l.root,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&overlay),
    )?;
    let root = l.root.as_path();

    // /etc: generated identity files and the host's name resolution.
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
            sys.write_in_root(root, Path::new(path), contents, 0o644),
        )?;
    }

    write_ld_so_conf(a, root, req.modules)?;

    let proc_ = a.exact_target(root, "/proc", NodeKind::Dir)?;
    a.mount(
        "mounting /proc",
        Some(Path::new("proc")),
        proc_.path(),
        proc_.host_path(),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    let sys_ = a.exact_target(root, "/sys", NodeKind::Dir)?;
    a.mount(
        "mounting /sys",
        Some(Path::new("sysfs")),
        sys_.path(),
        sys_.host_path(),
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?;
    mount_dev(a, root, req.modules)?;

    let tmp = a.exact_target(root, "/tmp", NodeKind::Dir)?;
    match cfg.tmp {
        TmpMode::Private => {
            let data = format!("size={},mode=1777", cfg.tmp_size);
            a.mount(
                "mounting /tmp",
                Some(Path::new("tmpfs")),
                tmp.path(),
                tmp.host_path(),
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&data),
            )?;
        }
        TmpMode::Host => {
            let m = SiteMount {
                source: "/tmp".into(),
                destination: None,
                read_only: false,
                recursive: false,
            };
            a.site_mount("binding the host /tmp", root, &m)?;
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

    let creds = user.creds();
    for (index, v) in req.volumes.iter().enumerate() {
        if let Some(cache) = &v.cache {
            a.cache_mount(cfg, root, v, cache, index, user, &policy)?;
            continue;
        }
        let (src, kind) =
            sys.open_as_user(&v.source, &creds)
                .map_err(|e| SetupError::VolumeSource {
                    source_path: v.source.clone(),
                    errno: e.errno,
                })?;
        let attrs = MountAttrs::NOSUID_NODEV.with_rdonly(v.read_only);
        let step = format!("volume {}:{}", v.source.display(), v.destination.display());
        a.bind(
            &step,
            root,
            &src,
            kind,
            &v.destination,
            attrs,
            v.recursive,
            Some(&policy),
        )?;
    }

    Ok(PreparedRoot {
        root: l.root.clone(),
        loop_device: loop_path,
        mounts: a.mounted.clone(),
    })
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
/// devpts instance and a `/dev/shm`. The device binds and devpts are the only
/// mounts of the container without `nodev`.
fn mount_dev(
    a: &mut Assembler<'_>,
    root: &Path,
    modules: &[(&str, &Module)],
) -> Result<(), SetupError> {
    let sys = a.sys;
    let dev = a.exact_target(root, "/dev", NodeKind::Dir)?;
    a.mount(
        "mounting /dev",
        Some(Path::new("tmpfs")),
        dev.path(),
        dev.host_path(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0755"),
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
        let (src, _) = a.step(step.clone(), sys.open_host(&d))?;
        a.bind(
            &step,
            root,
            &src,
            NodeKind::File,
            &d,
            node_attrs,
            false,
            None,
        )?;
    }
    let pts = a.exact_target(root, "/dev/pts", NodeKind::Dir)?;
    a.mount(
        "mounting /dev/pts",
        Some(Path::new("devpts")),
        pts.path(),
        pts.host_path(),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = a.exact_target(root, "/dev/shm", NodeKind::Dir)?;
    a.mount(
        "mounting /dev/shm",
        Some(Path::new("tmpfs")),
        shm.path(),
        shm.host_path(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777"),
    )?;
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        a.step(
            format!("linking {link}"),
            sys.symlink_in_root(root, Path::new(link), Path::new(target)),
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

    fn mount_of(c: &Call) -> Option<(String, Option<String>, MsFlags)> {
        match c {
            Call::Mount {
                target,
                fstype,
                flags,
                ..
            } => Some((target.display().to_string(), fstype.clone(), *flags)),
            _ => None,
        }
    }

    #[test]
    fn plan_starts_with_a_slave_namespace_then_image_then_overlay() {
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
        let mounts: Vec<_> = calls.iter().filter_map(mount_of).collect();
        assert_eq!(
            mounts[1],
            (
                "/run/shifter".into(),
                Some("tmpfs".into()),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV
            )
        );
        assert_eq!(
            mounts[2],
            (
                "/run/shifter/lower".into(),
                Some("squashfs".into()),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV
            )
        );
        assert_eq!(
            mounts[3],
            (
                "/run/shifter/root".into(),
                Some("overlay".into()),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV
            )
        );
        assert!(calls.contains(&Call::AttachLoop(format!("/images/{ID}.squashfs").into())));
        let upper = calls
            .iter()
            .find_map(|c| match c {
                Call::Mount {
                    fstype: Some(t),
                    data: Some(d),
                    ..
                } if t == "tmpfs" => Some(d.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(upper, "size=64m,mode=0755");
        let overlay_data = calls
            .iter()
            .find_map(|c| match c {
                Call::Mount {
                    fstype: Some(t),
                    data: Some(d),
                    ..
                } if t == "overlay" => Some(d.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            overlay_data,
            "lowerdir=/run/shifter/lower,upperdir=/run/shifter/upper,workdir=/run/shifter/work"
        );
    }

    #[test]
    fn every_mount_is_nosuid_and_all_but_device_nodes_are_nodev() {
        let sys = FakeSys::new();
        let c = cfg("tmp = \"host\"\n[[site_fs]]\nsource = \"/home\"\n");
        let vols = Volume::parse_all(&["/scratch:/data:ro"]).unwrap();
        prepare(
            &sys,
            &c,
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &[],
            },
        )
        .unwrap();
        for call in sys.mount_calls() {
            match call {
                Call::Mount { flags, target, .. } if flags.contains(MsFlags::MS_BIND) => {
                    // Binds get their flags from the mount_setattr that follows.
                    let _ = target;
                }
                Call::Mount { flags, target, .. } if target == Path::new("/") => {
                    assert_eq!(flags, MsFlags::MS_SLAVE | MsFlags::MS_REC)
                }
                Call::Mount { flags, target, .. } => {
                    assert!(
                        flags.contains(MsFlags::MS_NOSUID),
                        "{} lacks nosuid",
                        target.display()
                    );
                    let devpts = target.ends_with("dev/pts");
                    assert!(
                        devpts || flags.contains(MsFlags::MS_NODEV),
                        "{} lacks nodev",
                        target.display()
                    );
                }
                Call::MountSetattr { target, set, .. } => {
                    assert!(set.nosuid, "{}", target.display());
                    let is_dev_node = DEVICES.iter().any(|d| target.ends_with(format!("dev/{d}")));
                    assert_eq!(set.nodev, !is_dev_node, "{}", target.display());
                }
                _ => {}
            }
        }
    }

    #[test]
    fn user_volume_is_opened_as_the_user_then_bound_then_remounted() {
        let sys = FakeSys::new();
        let vols = Volume::parse_all(&["/scratch/alice:/data:ro"]).unwrap();
        prepare(
            &sys,
            &cfg(""),
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &[],
            },
        )
        .unwrap();
        let calls = sys.calls();
        let open = calls
            .iter()
            .position(|c| {
                *c == Call::OpenAsUser {
                    path: "/scratch/alice".into(),
                    uid: 1001,
                }
            })
            .expect("source opened as the user");
        let tail = &calls[open + 1..];
        assert_eq!(
            tail[0],
            Call::Resolve {
                root: "/run/shifter/root".into(),
                path: "/data".into(),
                create: Create::here(NodeKind::Dir)
            }
        );
        assert_eq!(
            tail[1],
            Call::Mount {
                source: Some("user-fd:/scratch/alice".into()),
                target: "/run/shifter/root/data".into(),
                fstype: None,
                flags: MsFlags::MS_BIND,
                data: None
            }
        );
        assert!(matches!(tail[2], Call::Resolve { create: None, .. }));
        assert_eq!(
            tail[3],
            Call::MountSetattr {
                target: "/run/shifter/root/data".into(),
                set: MountAttrs {
                    rdonly: true,
                    nosuid: true,
                    nodev: true,
                    noexec: false
                },
                recursive: false
            }
        );
    }

    #[test]
    fn recursive_volume_gets_flags_on_every_submount() {
        let sys = FakeSys::new();
        let vols = Volume::parse_all(&["/scratch:/data:rec"]).unwrap();
        prepare(
            &sys,
            &cfg(""),
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &[],
            },
        )
        .unwrap();
        let calls = sys.calls();
        assert!(calls
            .iter()
            .any(|c| matches!(c, Call::Mount { target, flags, .. }
            if target.ends_with("data") && *flags == MsFlags::MS_BIND | MsFlags::MS_REC)));
        assert!(calls.iter().any(
            |c| matches!(c, Call::MountSetattr { target, recursive: true, .. }
            if target.ends_with("data"))
        ));
    }

    #[test]
    fn forbidden_volume_is_refused_before_anything_is_mounted() {
        let sys = FakeSys::new();
        let vols = Volume::parse_all(&["/home/alice:/etc"]).unwrap();
        let err = prepare(
            &sys,
            &cfg(""),
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &[],
            },
        )
        .unwrap_err();
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
        let vols = Volume::parse_all(&["/root:/data"]).unwrap();
        let err = prepare(
            &sys,
            &cfg(""),
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &[],
            },
        )
        .unwrap_err();
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

    #[test]
    fn failure_midway_detaches_everything_mounted_so_far_in_reverse() {
        let sys = FakeSys::new();
        sys.fail_when(
            Errno::ENOMEM,
            |c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "sysfs"),
        );
        let err = prepare(&sys, &cfg(""), &image(), &user(), &Request::default()).unwrap_err();
        assert!(err.to_string().contains("mounting /sys"), "{err}");
        let umounts: Vec<PathBuf> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Umount { target, flags } => {
                    assert_eq!(flags, MntFlags::MNT_DETACH);
                    Some(target)
                }
                _ => None,
            })
            .collect();
        let expect: Vec<PathBuf> = [
            "/run/shifter/root/proc",
            "/run/shifter/root",
            "/run/shifter/lower",
            "/run/shifter",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(umounts, expect);
    }

    #[test]
    fn failed_volume_bind_rolls_back_the_whole_root() {
        let sys = FakeSys::new();
        sys.fail_when(
            Errno::EPERM,
            |c| matches!(c, Call::MountSetattr { target, .. } if target.ends_with("data")),
        );
        let vols = Volume::parse_all(&["/scratch:/data"]).unwrap();
        prepare(
            &sys,
            &cfg(""),
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &[],
            },
        )
        .unwrap_err();
        let calls = sys.calls();
        let first_umount = calls
            .iter()
            .position(|c| matches!(c, Call::Umount { .. }))
            .unwrap();
        let umounts: Vec<_> = calls[first_umount..]
            .iter()
            .map(|c| match c {
                Call::Umount { target, .. } => target.clone(),
                other => panic!("only unmounts after the failure, got {other:?}"),
            })
            .collect();
        assert_eq!(
            umounts.first().unwrap(),
            Path::new("/run/shifter/root/data")
        );
        assert_eq!(umounts.last().unwrap(), Path::new("/run/shifter"));
        let mounts = calls
            .iter()
            .filter(|c| matches!(c, Call::Mount { target, .. } if target != Path::new("/")))
            .count();
        assert_eq!(umounts.len(), mounts, "every mount is undone");
    }

    #[test]
    fn volume_destination_missing_inside_another_mount_is_not_created_by_root() {
        let sys = FakeSys::new();
        sys.fail_when(Errno::EXDEV, |c| {
            matches!(c, Call::Resolve { path, create: Some(Create { across_mounts: false, .. }), .. }
                if path == Path::new("/home/bob/new"))
        });
        let c = cfg("[[site_fs]]\nsource = \"/home\"\n");
        let vols = Volume::parse_all(&["/scratch:/home/bob/new"]).unwrap();
        let err = prepare(
            &sys,
            &c,
            &image(),
            &user(),
            &Request {
                volumes: &vols,
                modules: &[],
            },
        )
        .unwrap_err();
        assert!(
            matches!(err, SetupError::DestinationOnHostMount { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("create it there yourself first"),
            "{err}"
        );
        // The site mount itself may be created across mounts: it is the admin's.
        assert!(sys.calls().iter().any(|c| matches!(c, Call::Resolve { path, create: Some(Create { across_mounts: true, .. }), .. }
            if path == Path::new("/home"))));
    }

    #[test]
    fn corrupt_image_gives_a_clear_error() {
        let sys = FakeSys::new();
        sys.fail_when(
            Errno::EINVAL,
            |c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "squashfs"),
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
            path: "/run/shifter/root/dev/ptmx".into(),
            target: "pts/ptmx".into()
        }));
        let tmp = calls.iter().find_map(|c| match c {
            Call::Mount { target, data, .. } if target.ends_with("root/tmp") => data.clone(),
            _ => None,
        });
        assert_eq!(tmp.as_deref(), Some("size=1g,mode=1777"));
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
            },
        )
        .unwrap();
        let binds: Vec<String> = sys
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount { target, flags, .. } if flags.contains(MsFlags::MS_BIND) => {
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
        assert!(pos("/dev/nvidia0") < pos("/home"));
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
            },
        )
    }

    const CACHE_SPEC: &str = "/var/cache/shifter:/cache:perNodeCache=size=2G";

    #[test]
    fn per_node_cache_is_formatted_mounted_nosuid_nodev_and_given_to_the_user() {
        let sys = FakeSys::new();
        let p = prepare_cache(&sys, CACHE_SPEC).unwrap();
        assert!(p.mounts.contains(&PathBuf::from("/run/shifter/root/cache")));
        let calls = sys.calls();
        let at = calls
            .iter()
            .position(|c| *c == Call::MkdirAll("/var/cache/shifter".into()))
            .expect("cache dir made");
        let tail = &calls[at..];
        assert!(matches!(&tail[1], Call::CreateSparse { size, .. } if *size == 2 << 30));
        assert!(matches!(&tail[2], Call::AttachLoopRw(_)));
        assert!(matches!(&tail[3], Call::Unlink(_)));
        assert!(matches!(&tail[4], Call::RunTool(argv) if argv.last().unwrap() == "/dev/loop8"));
        assert_eq!(
            tail[5],
            Call::Mount {
                source: Some("/dev/loop8".into()),
                target: "/run/shifter/root/cache".into(),
                fstype: Some("xfs".into()),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data: None
            }
        );
        assert!(matches!(&tail[6], Call::Resolve { create: None, .. }));
        assert_eq!(
            tail[7],
            Call::ChownDir {
                path: "/run/shifter/root/cache".into(),
                uid: 1001,
                gid: 1001,
                mode: 0o700
            }
        );
        // The destination was resolved (created on the writable layer) first.
        assert!(calls[..at]
            .iter()
            .any(|c| matches!(c, Call::Resolve { path, create, .. }
            if path == Path::new("/cache") && *create == Create::here(NodeKind::Dir))));
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
                |c| matches!(c, Call::Resolve { path, create: Some(_), .. } if path == Path::new("/cache")),
            ),
            (
                "mkdir",
                |c| matches!(c, Call::MkdirAll(p) if p == Path::new("/var/cache/shifter")),
            ),
            ("create", |c| matches!(c, Call::CreateSparse { .. })),
            ("attach", |c| matches!(c, Call::AttachLoopRw(_))),
            ("mkfs", |c| matches!(c, Call::RunTool(_))),
            (
                "mount",
                |c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "xfs"),
            ),
            (
                "reopen",
                |c| matches!(c, Call::Resolve { path, create: None, .. } if path == Path::new("/cache")),
            ),
            ("chown", |c| matches!(c, Call::ChownDir { .. })),
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
            let mounts = calls
                .iter()
                .filter(|c| matches!(c, Call::Mount { target, .. } if target != Path::new("/")))
                .count();
            let failed_mount = usize::from(name == "mount");
            let umounts = calls
                .iter()
                .filter(|c| matches!(c, Call::Umount { .. }))
                .count();
            assert_eq!(
                umounts + failed_mount,
                mounts,
                "{name}: every mount is undone"
            );
            let cache_mounted = name == "reopen" || name == "chown";
            assert_eq!(
                calls.contains(&Call::Umount {
                    target: "/run/shifter/root/cache".into(),
                    flags: MntFlags::MNT_DETACH
                }),
                cache_mounted,
                "{name}"
            );
            // Nothing runs after the rollback's unmounts.
            let first_umount = calls
                .iter()
                .position(|c| matches!(c, Call::Umount { .. }))
                .unwrap();
            assert!(
                calls[first_umount..]
                    .iter()
                    .all(|c| matches!(c, Call::Umount { .. })),
                "{name}"
            );
        }
    }
}
