//! Every raw kernel call the runtime makes, behind one trait.
//!
//! [`Sys`] is implemented by [`real::RealSys`] (the only code in this crate that
//! uses `unsafe`) and, with the `test-utils` feature, by [`fake::FakeSys`], which
//! records each call so unit tests can assert the exact mounts, flags and order
//! without root. The rest of the crate receives `&dyn Sys`.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use nix::mount::{MntFlags, MsFlags};
use thiserror::Error;

#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
pub mod real;

/// One failed kernel call, with the errno and the path it concerns.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{op} {path}: {errno}")]
pub struct SysError {
    pub op: &'static str,
    pub path: PathBuf,
    pub errno: nix::errno::Errno,
}

impl SysError {
    pub fn new(op: &'static str, path: impl Into<PathBuf>, errno: nix::errno::Errno) -> Self {
        SysError {
            op,
            path: path.into(),
            errno,
        }
    }
}

pub type SysResult<T> = Result<T, SysError>;

/// What kind of inode a bind source is, so the destination is created to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
}

/// How `resolve_in_root` creates what is missing.
///
/// Missing components are only ever created on the mount the root itself is
/// (the container's own writable layer, `RESOLVE_NO_XDEV`), never inside a
/// bind of a host filesystem, where root would otherwise create files on the
/// user's behalf. There is deliberately no way to create across mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Create {
    /// What the last component becomes (parents are always directories).
    pub kind: NodeKind,
}

impl Create {
    pub fn here(kind: NodeKind) -> Option<Create> {
        Some(Create { kind })
    }
}

/// A new filesystem to build detached with `fsopen`/`fsconfig`/`fsmount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsSpec<'a> {
    pub fstype: &'a str,
    /// The `source` parameter (a device for squashfs/xfs, a name otherwise).
    pub source: &'a str,
    /// Comma-separated `key=value` parameters and `flag`s, as mount(8) data.
    pub data: &'a str,
    /// Set on the new mount by `fsmount` itself, before it is reachable.
    pub attrs: MountAttrs,
}

/// An open reference to a path, usable as a mount source or target.
///
/// For the real implementation `path()` is `/proc/self/fd/N`, so the kernel
/// operates on exactly the inode that was checked, not on whatever the path
/// names by the time of the mount. `host_path()` is for messages and unmounts.
#[derive(Debug)]
pub struct Handle {
    _fd: Option<OwnedFd>,
    path: PathBuf,
    host_path: PathBuf,
}

impl Handle {
    pub fn new(fd: Option<OwnedFd>, path: PathBuf, host_path: PathBuf) -> Self {
        Handle {
            _fd: fd,
            path,
            host_path,
        }
    }

    /// The path to hand to `mount(2)`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor behind the handle (absent for the fake's handles).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self._fd.as_ref().map(|f| f.as_fd())
    }

    /// Where this is on the host, as far as the kernel can tell.
    pub fn host_path(&self) -> &Path {
        &self.host_path
    }
}

/// An attached loop device; dropping it closes our reference so the
/// autoclear flag can release the device once nothing is mounted from it.
#[derive(Debug)]
pub struct LoopDev {
    pub path: PathBuf,
    pub _fd: Option<OwnedFd>,
}

/// How long root waits for [`Sys::open_as_user`]: a hung NFS or a user's
/// FUSE daemon that never answers must not hold the step (and its
/// half-built namespace) forever.
pub const USER_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Mount attributes settable with `mount_setattr(2)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountAttrs {
    pub rdonly: bool,
    pub nosuid: bool,
    pub nodev: bool,
    pub noexec: bool,
}

impl MountAttrs {
    pub const NONE: MountAttrs = MountAttrs {
        rdonly: false,
        nosuid: false,
        nodev: false,
        noexec: false,
    };

    pub const NOSUID_NODEV_NOEXEC: MountAttrs = MountAttrs {
        rdonly: false,
        nosuid: true,
        nodev: true,
        noexec: true,
    };

    pub const NOSUID_NODEV: MountAttrs = MountAttrs {
        rdonly: false,
        nosuid: true,
        nodev: true,
        noexec: false,
    };

    pub fn with_rdonly(mut self, ro: bool) -> Self {
        self.rdonly = ro;
        self
    }

    pub fn bits(self) -> u64 {
        // Values from <linux/mount.h>.
        (if self.rdonly { 0x1 } else { 0 })
            | (if self.nosuid { 0x2 } else { 0 })
            | (if self.nodev { 0x4 } else { 0 })
            | (if self.noexec { 0x8 } else { 0 })
    }
}

/// How a helper program run with [`Sys::run_tool`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// Exit code, or 128+signal.
    pub status: i32,
    /// The end of what it wrote to stderr, for the error message.
    pub stderr: String,
}

/// Credentials to act with: the target user of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Process ids as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub ruid: u32,
    pub euid: u32,
    pub suid: u32,
    pub rgid: u32,
    pub egid: u32,
    pub sgid: u32,
    pub groups: Vec<u32>,
}

/// The five capability sets, as in `/proc/self/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl CapSets {
    pub fn all_empty(&self) -> bool {
        *self == CapSets::default()
    }
}

/// Every kernel call of the runtime. Implementations must not spawn threads.
pub trait Sys {
    /// `unshare(CLONE_NEWNS)`.
    fn unshare_mount_ns(&self) -> SysResult<()>;
    /// `mount(2)`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()>;
    /// `umount2(2)`.
    fn umount(&self, target: &Path, flags: MntFlags) -> SysResult<()>;
    /// `mount_setattr(2)` on the mount `target` refers to; with `recursive`,
    /// on every mount below it too (`AT_RECURSIVE`). Only ever called on a
    /// detached mount (from [`Sys::open_tree`]), so the attributes land on the
    /// very mount that is then attached, whatever happens to paths meanwhile.
    fn mount_setattr(&self, target: &Handle, set: MountAttrs, recursive: bool) -> SysResult<()>;
    /// A detached copy of the mount tree at `source` (`open_tree(2)` with
    /// `OPEN_TREE_CLONE`, `AT_RECURSIVE` with `recursive`), for a bind.
    fn open_tree(&self, source: &Handle, recursive: bool) -> SysResult<Handle>;
    /// A new, detached filesystem mount (`fsopen`, `fsconfig`, `fsmount`) with
    /// its attributes already set.
    fn fs_mount(&self, spec: &FsSpec<'_>) -> SysResult<Handle>;
    /// Attaches the detached mount `mount` onto exactly the inode `target`
    /// refers to (`move_mount(2)`, both `*_EMPTY_PATH`). Afterwards `mount`
    /// names the root of the attached mount.
    fn move_mount(&self, mount: &Handle, target: &Handle) -> SysResult<()>;
    /// A free loop device attached read-only with autoclear to the open file
    /// `image` (`shown` names it in errors)
    /// (`LOOP_CTL_GET_FREE` + `LOOP_CONFIGURE`, retried when another process
    /// grabbed the same device).
    fn attach_loop(&self, image: &std::fs::File, shown: &Path) -> SysResult<LoopDev>;
    /// Opens the host directory `path`, creating missing components with
    /// `mode`, walking from `/` one component at a time by descriptor with
    /// no symlink followed. Every component must be root's; one that others
    /// may write must be sticky (so nobody can rename root's entry in it),
    /// and the last must be writable by root only (`EPERM` otherwise). For
    /// the per-node cache directories, which may sit below `/tmp`.
    fn open_private_dir(&self, path: &Path, mode: u32) -> SysResult<Handle>;
    /// Creates `name` in the directory `dir` (from [`Sys::open_private_dir`];
    /// `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600) and sizes it to `size` bytes
    /// without writing (sparse); `ENOSPC` when the filesystem has less free.
    fn create_sparse_file(&self, dir: &Handle, name: &str, size: u64) -> SysResult<Handle>;
    /// A free loop device attached read-write with autoclear to the open
    /// file `file` (as [`Sys::attach_loop`], but writable and by descriptor).
    fn attach_loop_rw(&self, file: &Handle) -> SysResult<LoopDev>;
    /// `unlinkat(2)` of `name` in the directory `dir`.
    fn unlink_at(&self, dir: &Handle, name: &str) -> SysResult<()>;
    /// Opens (creating, `O_NOFOLLOW`, mode 0600) the regular file `name` in
    /// the directory `dir` (from [`Sys::open_private_dir`]), which must be
    /// root's alone, and takes an exclusive `flock(2)` on it, waiting at most
    /// `wait` (`EWOULDBLOCK` then). The lock goes with the returned handle.
    fn lock_file(&self, dir: &Handle, name: &str, wait: Duration) -> SysResult<Handle>;
    /// Runs `argv[0]` (an absolute path) with an empty environment and
    /// stdin/stdout on `/dev/null`, killing it after `timeout` (`ETIMEDOUT`).
    fn run_tool(&self, argv: &[&OsStr], timeout: Duration) -> SysResult<ToolOutput>;
    /// Forks a daemon child (returns its pid): the child runs `prepare` (for
    /// sshd: enter the container and become the user; false ends it with
    /// 120), then arms `PR_SET_PDEATHSIG(SIGKILL)` after that uid change
    /// (which clears it), exits unless the caller is still its parent, puts
    /// stdin/stdout/stderr on `/dev/null` and execs `program` with `argv`
    /// and `env` (exit 122 when that fails).
    fn spawn_daemon(
        &self,
        prepare: &dyn Fn() -> bool,
        program: &std::ffi::CStr,
        argv: &[std::ffi::CString],
        env: &[std::ffi::CString],
    ) -> SysResult<nix::unistd::Pid>;
    /// Gives the directory `target` refers to this owner and mode, through
    /// that descriptor (never a path).
    fn chown_dir(&self, target: &Handle, uid: u32, gid: u32, mode: u32) -> SysResult<()>;
    /// `mkdir -p` on the host side (only ever below `mount_root`).
    fn mkdir_all(&self, path: &Path, mode: u32) -> SysResult<()>;
    /// Opens `path` inside `root` as if `root` were `/` (`openat2`
    /// `RESOLVE_IN_ROOT`), creating missing components as directories and the
    /// last one as `create.kind` when given (see [`Create`]).
    fn resolve_in_root(
        &self,
        root: &Path,
        path: &Path,
        create: Option<Create>,
    ) -> SysResult<Handle>;
    /// Opens `path` inside `root` like [`Sys::resolve_in_root`], but the whole
    /// walk stays on the root's own mount (`RESOLVE_NO_XDEV` for existing
    /// components too): an image symlink leading into any other mount (a site
    /// mount, a module's bind of a host directory) is refused with `EXDEV`.
    fn resolve_on_root_mount(
        &self,
        root: &Path,
        path: &Path,
        create: Option<Create>,
    ) -> SysResult<Handle>;
    /// Opens `rel` strictly below the directory `dir` (`RESOLVE_BENEATH`,
    /// `RESOLVE_NO_SYMLINKS`, `RESOLVE_NO_XDEV`), creating what is missing:
    /// for the runtime's own paths (`/proc`, `/dev/pts`, device nodes), which
    /// no symlink and no other mount may redirect.
    fn open_beneath(&self, dir: &Handle, rel: &Path, create: Option<Create>) -> SysResult<Handle>;
    /// Replaces `name` in the directory `dir` with a symlink to `target`.
    fn symlink_at(&self, dir: &Handle, name: &str, target: &Path) -> SysResult<()>;
    /// Creates the new regular file `name` in the directory `dir`
    /// (`O_CREAT|O_EXCL|O_NOFOLLOW`: never an existing entry or a symlink)
    /// with `contents`, then sets `mode` and, when given, `owner` (uid, gid)
    /// on that descriptor.
    fn write_at(
        &self,
        dir: &Handle,
        name: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> SysResult<()>;
    /// Replaces `path` inside `root` with a new regular file (never writing
    /// through a symlink of the image, and only on the root's own mount:
    /// a parent leading into another mount is refused with `EXDEV`).
    fn write_in_root(&self, root: &Path, path: &Path, contents: &[u8], mode: u32) -> SysResult<()>;
    /// Replaces `path` inside `root` with a symlink to `target`.
    fn symlink_in_root(&self, root: &Path, path: &Path, target: &Path) -> SysResult<()>;
    /// Opens a bind source with the user's uid, gid and groups, so the kernel
    /// checks the user's access. Only directories and regular files.
    fn open_as_user(&self, path: &Path, creds: &Creds) -> SysResult<(Handle, NodeKind)>;
    /// Opens a bind source as ourselves (site mounts, devices).
    fn open_host(&self, path: &Path) -> SysResult<(Handle, NodeKind)>;
    fn chroot(&self, path: &Path) -> SysResult<()>;
    fn chdir(&self, path: &Path) -> SysResult<()>;
    /// Drops capabilities 0..=63 from the bounding set (`PR_CAPBSET_DROP`;
    /// numbers the kernel does not know are skipped), without asking the
    /// filesystem how many there are.
    fn drop_bounding_set(&self) -> SysResult<()>;
    /// Empties the inheritable and ambient sets, which survive a uid change.
    fn clear_inheritable_and_ambient(&self) -> SysResult<()>;
    fn set_no_new_privs(&self) -> SysResult<()>;
    fn setgroups(&self, groups: &[u32]) -> SysResult<()>;
    fn setresgid(&self, gid: u32) -> SysResult<()>;
    fn setresuid(&self, uid: u32) -> SysResult<()>;
    fn read_ids(&self) -> SysResult<Ids>;
    /// The five sets from the kernel itself (`capget`, `PR_CAPBSET_READ`,
    /// `PR_CAP_AMBIENT_IS_SET`), never from a `/proc` that a mount could fake.
    fn read_caps(&self) -> SysResult<CapSets>;
    fn no_new_privs(&self) -> SysResult<bool>;
}
