//! Per-node caches: `--volume=DIR:/cache:perNodeCache=size=2G` gives the step
//! a private xfs filesystem on each node, backed by a sparse file in `DIR`
//! (a directory the site allows), mounted `nosuid,nodev` and owned by the user.
//!
//! The backing file is unlinked as soon as its loop device holds it, so the
//! only things keeping the space are the loop device and the mount, and both
//! belong to the step's private mount namespace: when its last process exits
//! (normally, by `scancel` or after a `kill -9` of slurmstepd) the kernel
//! drops the mount, autoclear frees the loop device and the file's blocks are
//! released. Nothing has to run at teardown, so nothing can be forgotten.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::config::PerNodeCacheConfig;
use crate::sys::{Handle, LoopDev, Sys, SysError};

/// mkfs.xfs (since xfsprogs 5.19) refuses filesystems smaller than 300 MiB.
pub const MIN_SIZE: u64 = 300 << 20;

/// What the user asked for after `perNodeCache=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRequest {
    /// Size of the filesystem in bytes.
    pub size: u64,
}

impl CacheRequest {
    /// Parses `size=<n>[,fs=xfs][,method=loop]` (Shifter's option syntax).
    pub fn parse(opts: &str) -> Result<CacheRequest, String> {
        let mut size = None;
        for kv in opts.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("option {kv:?} has no value"))?;
            match k {
                "size" => size = Some(parse_size(v)?),
                "fs" if v == "xfs" => {}
                "fs" => return Err(format!("filesystem {v:?} is not offered (only fs=xfs)")),
                "method" if v == "loop" => {}
                "method" => return Err(format!("method {v:?} is not offered (only method=loop)")),
                other => return Err(format!("unknown option {other:?} (use size, fs or method)")),
            }
        }
        let size = size.ok_or("size= is missing")?;
        if size < MIN_SIZE {
            return Err(format!(
                "size {} is below the xfs minimum of 300M",
                human(size)
            ));
        }
        Ok(CacheRequest { size })
    }
}

/// Parses a size such as `2G`, `100M`, `1T` or plain bytes; suffixes are
/// binary (K = 1024) and case-insensitive, an optional `B`/`iB` is accepted.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("size {s:?} is not a size such as 500M, 2G or 1T");
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix(['b', 'B']))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(bad()),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift)
        .filter(|b| *b > 0)
        .ok_or_else(bad)
}

/// A byte count the way users write it (`2G`, `300M`, or bytes).
fn human(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Validates `[per_node_cache]`; the error is (key, problem, fix).
pub fn check_config(c: &PerNodeCacheConfig) -> Result<(), (String, String, &'static str)> {
    let max = parse_size(&c.max_size)
        .map_err(|why| ("max_size".to_owned(), why, "write e.g. max_size = \"50G\""))?;
    if max < MIN_SIZE {
        return Err((
            "max_size".into(),
            format!("{} is below the xfs minimum of 300M", c.max_size),
            "allow at least \"300M\"",
        ));
    }
    if c.dir.is_none() && c.allowed_dirs.is_empty() {
        return Err((
            "dir".into(),
            "neither dir nor allowed_dirs is set".into(),
            "set dir = \"/var/lib/shifter/cache\" (a root-owned directory on local disk)",
        ));
    }
    for (i, d) in c.backing_dirs().enumerate() {
        let ok = crate::volume::clean_absolute(&d.to_string_lossy()).as_deref() == Some(d);
        if !ok || d == Path::new("/") {
            let key = if c.dir.is_some() && i == 0 {
                "dir".to_owned()
            } else {
                format!("allowed_dirs[{}]", i - usize::from(c.dir.is_some()))
            };
            return Err((
                key,
                format!("{} is not a clean absolute directory", d.display()),
                "give an absolute path without '..', '.' or a trailing '/', other than /",
            ));
        }
    }
    if !c.mkfs_xfs.is_absolute() {
        return Err((
            "mkfs_xfs".into(),
            format!("{} is not absolute", c.mkfs_xfs.display()),
            "give the absolute path of mkfs.xfs, e.g. \"/usr/sbin/mkfs.xfs\"",
        ));
    }
    if c.max_count == 0 {
        return Err((
            "max_count".into(),
            "0 would refuse every cache".into(),
            "allow at least 1, or remove [per_node_cache] to offer none",
        ));
    }
    if let Some(total) = &c.max_per_user {
        let t = parse_size(total).map_err(|why| {
            (
                "max_per_user".to_owned(),
                why,
                "write e.g. max_per_user = \"200G\"",
            )
        })?;
        if t < max {
            return Err((
                "max_per_user".into(),
                format!("{total} is below max_size ({})", c.max_size),
                "allow at least max_size",
            ));
        }
    }
    if c.mkfs_timeout_secs == 0 {
        return Err((
            "mkfs_timeout_secs".into(),
            "0 would never wait".into(),
            "use a positive number of seconds",
        ));
    }
    Ok(())
}

/// The site's rules for one request: caches offered, `source` one of the
/// backing directories, size within `max_size`. The error says what to change.
pub fn check_request(
    cfg: Option<&PerNodeCacheConfig>,
    source: &Path,
    req: &CacheRequest,
) -> Result<(), String> {
    let Some(cfg) = cfg else {
        return Err("this system offers no per-node caches ([per_node_cache] is not configured); use a plain volume or ask your admin".into());
    };
    if !cfg.backing_dirs().any(|d| d == source) {
        let dirs: Vec<String> = cfg
            .backing_dirs()
            .map(|d| d.display().to_string())
            .collect();
        return Err(format!(
            "{} is not a cache directory of this system; use one of: {}",
            source.display(),
            dirs.join(", ")
        ));
    }
    // Validated when the config was loaded.
    let max = parse_size(&cfg.max_size).unwrap_or(0);
    if req.size > max {
        return Err(format!(
            "size {} is above the site's maximum of {}; ask for at most {}",
            human(req.size),
            cfg.max_size,
            cfg.max_size
        ));
    }
    Ok(())
}

/// The node-wide limit of one user's attached caches, in bytes.
pub fn per_user_limit(cfg: &PerNodeCacheConfig) -> u64 {
    // Both validated when the config was loaded.
    match &cfg.max_per_user {
        Some(t) => parse_size(t).unwrap_or(0),
        None => parse_size(&cfg.max_size).unwrap_or(0).saturating_mul(4),
    }
}

/// The file name prefix of `uid`'s backing files: loop devices keep the
/// (unlinked) name, which is how a node counts a user's caches.
fn backing_prefix(uid: u32) -> String {
    format!("shifter-cache-u{uid}-")
}

/// Bytes of caches of `uid` attached on this node now, from the loop
/// devices' backing file names and sizes (`/sys/block/loop*/loop/backing_file`
/// and `size`, in 512-byte sectors), as `(backing_file, size)` pairs.
pub fn attached_bytes(uid: u32, devices: impl IntoIterator<Item = (String, u64)>) -> u64 {
    let prefix = backing_prefix(uid);
    devices
        .into_iter()
        .filter(|(file, _)| {
            Path::new(file.trim_end_matches(" (deleted)"))
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|(_, sectors)| sectors.saturating_mul(512))
        .sum()
}

/// Every loop device's backing file name and size in sectors, from sysfs.
pub fn loop_devices() -> Vec<(String, u64)> {
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter_map(|e| {
            let file = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let size = std::fs::read_to_string(e.path().join("size"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((file.trim().to_owned(), size))
        })
        .collect()
}

/// The limits that concern a whole request: how many caches one step may
/// ask for, and how much one user may hold on the node with this request.
pub fn check_totals(
    cfg: &PerNodeCacheConfig,
    uid: u32,
    requested: &[u64],
    attached: u64,
) -> Result<(), String> {
    if requested.len() > cfg.max_count {
        return Err(format!(
            "{} caches asked for, the site allows {} per step; use fewer, larger caches",
            requested.len(),
            cfg.max_count
        ));
    }
    let limit = per_user_limit(cfg);
    let want: u64 = requested.iter().sum();
    if attached.saturating_add(want) > limit {
        return Err(format!(
            "uid {uid} has {} of caches on this node already and asks for {} more; the site allows {} per user: wait for your other steps to end, or ask for less",
            human(attached),
            human(want),
            human(limit)
        ));
    }
    Ok(())
}

/// Where the per-user locks of [`lock_user_totals`] live: root's, on the
/// node's own tmpfs, shared by the plugin and `shifter`.
pub const LOCK_DIR: &str = "/run/shifter-rs";

/// Holds `uid`'s per-node cache lock on this node: taken before the user's
/// caches are counted and kept until the new ones are attached, so two steps
/// (or `shifter` runs) of one user cannot both pass the per-user total
/// before either has made its caches. Per user, so one user who stops their
/// own `shifter` holding it delays only themselves.
pub fn lock_user_totals(
    sys: &dyn Sys,
    cfg: &PerNodeCacheConfig,
    uid: u32,
    destination: &Path,
) -> Result<Handle, CacheError> {
    let dir = Path::new(LOCK_DIR);
    let dir_fd = sys
        .open_private_dir(dir, 0o700)
        .map_err(|cause| match cause.errno {
            nix::errno::Errno::EPERM | nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                CacheError::UnsafeDir {
                    dir: dir.to_owned(),
                }
            }
            _ => CacheError::Sys {
                destination: destination.to_owned(),
                step: "opening the per-user lock directory",
                cause,
            },
        })?;
    // Long enough for another setup of this user to make all its caches.
    let waited = Duration::from_secs(
        cfg.mkfs_timeout_secs
            .saturating_mul(cfg.max_count.max(1) as u64)
            .saturating_add(30),
    );
    sys.lock_file(&dir_fd, &format!("cache-u{uid}.lock"), waited)
        .map_err(|cause| match cause.errno {
            nix::errno::Errno::EWOULDBLOCK => CacheError::Busy { uid, waited },
            _ => CacheError::Sys {
                destination: destination.to_owned(),
                step: "taking the per-user cache lock",
                cause,
            },
        })
}

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("per-node caches: another step or shifter run of uid {uid} on this node held the per-user cache lock for {waited:?} (is one of your shifter processes stopped?); let it finish, then try again")]
    Busy { uid: u32, waited: Duration },
    #[error("per-node cache for {destination}: {dir} has less free space than the {size} asked for; ask for less, or ask your admin to free space there")]
    NoSpace {
        destination: PathBuf,
        dir: PathBuf,
        size: String,
    },
    #[error("per-node cache directory {dir} must be a directory owned by root and not writable by group or others (it is not, or is a symlink); ask your admin to fix it")]
    UnsafeDir { dir: PathBuf },
    #[error("per-node cache for {destination}: {step}: {cause}")]
    Sys {
        destination: PathBuf,
        step: &'static str,
        cause: SysError,
    },
    #[error("per-node cache for {destination}: {mkfs} failed (exit {status}): {stderr}")]
    Mkfs {
        destination: PathBuf,
        mkfs: PathBuf,
        status: i32,
        stderr: String,
    },
}

/// A cache filesystem made and not yet mounted: the loop device holding the
/// (already unlinked) backing file. Dropping it frees the device.
#[derive(Debug)]
pub struct Formatted {
    pub device: LoopDev,
}

/// Creates the backing file in `dir`, attaches it, unlinks it and makes an
/// xfs filesystem on the device. On error nothing is left behind: the file
/// is removed and the device (autoclear) goes with our descriptor.
pub fn format(
    sys: &dyn Sys,
    cfg: &PerNodeCacheConfig,
    dir: &Path,
    destination: &Path,
    req: &CacheRequest,
    index: usize,
    uid: u32,
) -> Result<Formatted, CacheError> {
    let err = |step: &'static str| {
        move |cause: SysError| CacheError::Sys {
            destination: destination.to_owned(),
            step,
            cause,
        }
    };
    // 0700 only when we create it; an existing one must be root's alone.
    let dir_fd = sys
        .open_private_dir(dir, 0o700)
        .map_err(|cause| match cause.errno {
            nix::errno::Errno::EPERM | nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                CacheError::UnsafeDir {
                    dir: dir.to_owned(),
                }
            }
            _ => err("opening the cache directory")(cause),
        })?;
    let (file, name) = create_backing(sys, &dir_fd, dir, req, index, uid, destination)?;
    let attached = sys.attach_loop_rw(&file);
    // The loop device holds the file now (or failed to): its name can go,
    // so a crash from here on leaves no file behind.
    let unlinked = sys.unlink_at(&dir_fd, &name);
    drop(file);
    let device = attached.map_err(err("attaching a loop device"))?;
    unlinked.map_err(err("removing the backing file's name"))?;
    let argv: [&OsStr; 5] = [
        cfg.mkfs_xfs.as_os_str(),
        OsStr::new("-q"),
        // A fresh sparse file has nothing to discard.
        OsStr::new("-K"),
        OsStr::new("-f"),
        device.path.as_os_str(),
    ];
    let out = sys
        .run_tool(&argv, Duration::from_secs(cfg.mkfs_timeout_secs))
        .map_err(err("running mkfs.xfs"))?;
    if out.status != 0 {
        return Err(CacheError::Mkfs {
            destination: destination.to_owned(),
            mkfs: cfg.mkfs_xfs.clone(),
            status: out.status,
            stderr: out.stderr,
        });
    }
    Ok(Formatted { device })
}

fn create_backing(
    sys: &dyn Sys,
    dir_fd: &Handle,
    dir: &Path,
    req: &CacheRequest,
    index: usize,
    uid: u32,
    destination: &Path,
) -> Result<(Handle, String), CacheError> {
    // Unique per process and cache; O_EXCL refuses anything already there.
    // The uid in the name is how the node counts a user's caches.
    let name = format!(
        "{}{}-{}-{index}.xfs",
        backing_prefix(uid),
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let file = sys
        .create_sparse_file(dir_fd, &name, req.size)
        .map_err(|cause| match cause.errno {
            nix::errno::Errno::ENOSPC => CacheError::NoSpace {
                destination: destination.to_owned(),
                dir: dir.to_owned(),
                size: human(req.size),
            },
            nix::errno::Errno::EPERM | nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR => {
                CacheError::UnsafeDir {
                    dir: dir.to_owned(),
                }
            }
            _ => CacheError::Sys {
                destination: destination.to_owned(),
                step: "creating the backing file",
                cause,
            },
        })?;
    Ok((file, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, FakeSys};
    use crate::sys::ToolOutput;
    use nix::errno::Errno;

    fn cfg() -> PerNodeCacheConfig {
        PerNodeCacheConfig {
            dir: Some("/var/cache/shifter".into()),
            allowed_dirs: vec!["/tmp/cache".into()],
            max_size: "2G".into(),
            mkfs_xfs: "/usr/sbin/mkfs.xfs".into(),
            mkfs_timeout_secs: 60,
            max_count: 4,
            max_per_user: None,
        }
    }

    #[test]
    fn sizes_take_binary_suffixes_in_either_case() {
        assert_eq!(parse_size("100M").unwrap(), 100 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("3GB").unwrap(), 3 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in [
            "",
            "abc",
            "G",
            "2X",
            "-1G",
            "0",
            "0G",
            "1.5G",
            "99999999999T",
            "2 G",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_are_size_fs_and_method() {
        let r = CacheRequest::parse("size=2G").unwrap();
        assert_eq!(r.size, 2 << 30);
        let r = CacheRequest::parse("size=500M,fs=xfs,method=loop").unwrap();
        assert_eq!(r.size, 500 << 20);
    }

    #[test]
    fn bad_options_say_what_is_offered() {
        for (opts, says) in [
            ("size=abc", "not a size such as 500M"),
            ("fs=xfs", "size= is missing"),
            ("size=2G,fs=ext4", "only fs=xfs"),
            ("size=2G,method=file", "only method=loop"),
            ("size=2G,color=red", "unknown option \"color\""),
            ("size", "has no value"),
            ("size=100M", "below the xfs minimum of 300M"),
        ] {
            let e = CacheRequest::parse(opts).unwrap_err();
            assert!(e.contains(says), "{opts}: {e}");
        }
    }

    #[test]
    fn request_must_name_an_allowed_dir_and_stay_under_the_cap() {
        let c = cfg();
        let r = CacheRequest { size: 1 << 30 };
        check_request(Some(&c), Path::new("/tmp/cache"), &r).unwrap();
        check_request(Some(&c), Path::new("/var/cache/shifter"), &r).unwrap();
        let e = check_request(Some(&c), Path::new("/home/me"), &r).unwrap_err();
        assert!(
            e.contains("use one of: /var/cache/shifter, /tmp/cache"),
            "{e}"
        );
        let big = CacheRequest { size: 3 << 30 };
        let e = check_request(Some(&c), Path::new("/tmp/cache"), &big).unwrap_err();
        assert!(
            e.contains("size 3G is above the site's maximum of 2G"),
            "{e}"
        );
        let e = check_request(None, Path::new("/tmp/cache"), &r).unwrap_err();
        assert!(e.contains("offers no per-node caches"), "{e}");
    }

    #[test]
    fn config_needs_a_dir_a_sane_cap_and_absolute_paths() {
        check_config(&cfg()).unwrap();
        let mut c = cfg();
        c.max_size = "lots".into();
        assert_eq!(check_config(&c).unwrap_err().0, "max_size");
        c.max_size = "100M".into();
        assert_eq!(check_config(&c).unwrap_err().0, "max_size");
        let mut c = cfg();
        c.dir = None;
        c.allowed_dirs.clear();
        assert_eq!(check_config(&c).unwrap_err().0, "dir");
        let mut c = cfg();
        c.allowed_dirs.push("/tmp/../etc".into());
        assert_eq!(check_config(&c).unwrap_err().0, "allowed_dirs[1]");
        let mut c = cfg();
        c.mkfs_xfs = "mkfs.xfs".into();
        assert_eq!(check_config(&c).unwrap_err().0, "mkfs_xfs");
    }

    fn run(sys: &FakeSys) -> Result<Formatted, CacheError> {
        format(
            sys,
            &cfg(),
            Path::new("/tmp/cache"),
            Path::new("/cache"),
            &CacheRequest { size: 1 << 30 },
            0,
            1001,
        )
    }

    #[test]
    fn file_is_created_attached_unlinked_then_formatted() {
        let sys = FakeSys::new();
        let f = run(&sys).unwrap();
        assert_eq!(f.device.path, Path::new("/dev/loop8"));
        let calls = sys.calls();
        assert_eq!(calls[0], Call::OpenPrivateDir("/tmp/cache".into()));
        let Call::CreateSparse { dir, name, size } = &calls[1] else {
            panic!("{calls:?}")
        };
        assert_eq!(dir, Path::new("/tmp/cache"));
        assert_eq!(*size, 1 << 30);
        assert!(name.starts_with("shifter-cache-") && name.ends_with(".xfs"));
        let file = dir.join(name);
        assert_eq!(calls[2], Call::AttachLoopRw(file.clone()));
        assert_eq!(calls[3], Call::Unlink(file));
        assert_eq!(
            calls[4],
            Call::RunTool(vec![
                "/usr/sbin/mkfs.xfs".into(),
                "-q".into(),
                "-K".into(),
                "-f".into(),
                "/dev/loop8".into()
            ])
        );
        assert_eq!(calls.len(), 5);
    }

    #[test]
    fn failed_attach_still_removes_the_backing_file() {
        let sys = FakeSys::new();
        sys.fail_when(Errno::ENXIO, |c| matches!(c, Call::AttachLoopRw(_)));
        let e = run(&sys).unwrap_err();
        assert!(e.to_string().contains("attaching a loop device"), "{e}");
        assert!(matches!(sys.calls().last(), Some(Call::Unlink(_))));
    }

    #[test]
    fn failed_mkfs_reports_its_stderr() {
        let sys = FakeSys::new();
        *sys.tool_output.borrow_mut() = ToolOutput {
            status: 1,
            stderr: "Filesystem must be larger than 300MB.".into(),
        };
        let e = run(&sys).unwrap_err().to_string();
        assert!(e.contains("/usr/sbin/mkfs.xfs failed (exit 1)"), "{e}");
        assert!(e.contains("larger than 300MB"), "{e}");
    }

    #[test]
    fn unsafe_cache_dir_is_refused_naming_it() {
        let sys = FakeSys::new();
        sys.fail_when(Errno::EPERM, |c| matches!(c, Call::CreateSparse { .. }));
        let e = run(&sys).unwrap_err();
        assert!(matches!(e, CacheError::UnsafeDir { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("/tmp/cache must be a directory owned by root"));
        // Nothing was created, so nothing is attached or unlinked.
        assert_eq!(sys.calls().len(), 2);
    }

    #[test]
    fn a_users_attached_caches_are_counted_from_the_loop_devices_names() {
        let devices = vec![
            (
                "/var/cache/shifter/shifter-cache-u1001-77-1-0.xfs (deleted)".to_owned(),
                2 * (1 << 21),
            ),
            (
                "/var/cache/shifter/shifter-cache-u1001-78-1-0.xfs (deleted)".to_owned(),
                1 << 21,
            ),
            (
                "/var/cache/shifter/shifter-cache-u10010-9-1-0.xfs (deleted)".to_owned(),
                1 << 30,
            ),
            ("/images/abc.squashfs".to_owned(), 1 << 30),
        ];
        assert_eq!(attached_bytes(1001, devices.clone()), 3 << 30);
        assert_eq!(attached_bytes(10010, devices.clone()), 1 << 39);
        assert_eq!(attached_bytes(7, devices), 0);
    }

    #[test]
    fn too_many_caches_or_too_much_per_user_is_refused_with_the_limit_named() {
        let mut c = cfg();
        c.max_size = "1G".into();
        c.max_count = 2;
        let g = 1u64 << 30;
        check_totals(&c, 1001, &[g, g], 0).unwrap();
        let err = check_totals(&c, 1001, &[g, g, g], 0).unwrap_err();
        assert!(err.contains("the site allows 2 per step"), "{err}");
        // Default per-user total: 4 x max_size.
        let err = check_totals(&c, 1001, &[g, g], 3 * g).unwrap_err();
        assert!(
            err.contains("has 3G of caches on this node already"),
            "{err}"
        );
        assert!(err.contains("allows 4G per user"), "{err}");
        c.max_per_user = Some("10G".into());
        check_totals(&c, 1001, &[g, g], 3 * g).unwrap();
        c.max_per_user = Some("512M".into());
        assert!(check_config(&c).unwrap_err().1.contains("below max_size"));
        c.max_per_user = None;
        c.max_count = 0;
        assert_eq!(check_config(&c).unwrap_err().0, "max_count");
    }
}
