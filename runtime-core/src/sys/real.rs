//! The real kernel calls. The only module of the crate allowed to use `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::socket::{self, ControlMessageOwned, MsgFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::{
    CapSets, Create, Creds, FsSpec, Handle, Ids, LoopDev, MountAttrs, NodeKind, Sys, SysError,
    SysResult, ToolOutput,
};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LOOP_MAJOR: u64 = 7;
/// Concurrent setups on one node can be handed the same free device; the loser
/// of the race gets EBUSY from LOOP_CONFIGURE and simply asks again.
const LOOP_ATTEMPTS: usize = 20;

/// `struct loop_info64` from <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from <linux/loop.h>.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

// The new mount API, from <linux/mount.h> (libc does not carry these).
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// `struct mount_attr` from <linux/mount.h>.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealSys;

fn cpath(op: &'static str, p: &Path) -> SysResult<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SysError::new(op, p, Errno::EINVAL))
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn proc_fd_path(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

fn handle_from_fd(fd: OwnedFd) -> Handle {
    let proc = proc_fd_path(fd.as_raw_fd());
    let host = std::fs::read_link(&proc).unwrap_or_else(|_| proc.clone());
    Handle::new(Some(fd), proc, host)
}

/// The normal components of a container path; `..` is refused rather than
/// interpreted, so callers never depend on how it would resolve.
fn components<'a>(op: &'static str, path: &'a Path) -> SysResult<Vec<&'a std::ffi::OsStr>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(SysError::new(op, path, Errno::EINVAL))
            }
        }
    }
    Ok(out)
}

fn open_root(root: &Path) -> SysResult<OwnedFd> {
    let fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SysError::new("open", root, e))?;
    // SAFETY: open(2) just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat2_resolving(
    rootfd: &OwnedFd,
    rel: &Path,
    flags: OFlag,
    extra: ResolveFlag,
) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS | extra);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let fd = nix::fcntl::openat2(rootfd.as_raw_fd(), rel, how)?;
    // SAFETY: openat2(2) just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl RealSys {
    /// Opens the parent of `rel` inside `root` (creating it) and returns it with the last name.
    fn parent_in_root<'a>(
        &self,
        op: &'static str,
        root: &Path,
        rel: &'a Path,
    ) -> SysResult<(OwnedFd, &'a std::ffi::OsStr)> {
        let comps = components(op, rel)?;
        let Some((name, parents)) = comps.split_last() else {
            return Err(SysError::new(op, rel, Errno::EINVAL));
        };
        let parent: PathBuf = parents.iter().collect();
        // Root writes stay on the root's own mount: a parent that an image
        // symlink leads into a bind of a host directory is refused (EXDEV).
        let h = self.resolve_on_root_mount(root, &parent, Create::here(NodeKind::Dir))?;
        let dirfd = h
            .fd()
            .ok_or_else(|| SysError::new(op, root.join(&parent), Errno::EBADF))?;
        let fd = nix::fcntl::openat(
            Some(dirfd.as_raw_fd()),
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SysError::new(op, root.join(&parent), e))?;
        // SAFETY: openat(2) just returned this descriptor and nothing else owns it.
        Ok((unsafe { OwnedFd::from_raw_fd(fd) }, name))
    }

    fn unlink_if_present(
        op: &'static str,
        dirfd: &OwnedFd,
        name: &std::ffi::OsStr,
        shown: &Path,
    ) -> SysResult<()> {
        match nix::unistd::unlinkat(
            Some(dirfd.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(SysError::new(op, shown, e)),
        }
    }
}

impl Sys for RealSys {
    fn unshare_mount_ns(&self) -> SysResult<()> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|e| SysError::new("unshare(CLONE_NEWNS)", "", e))
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        nix::mount::mount(source, target, fstype, flags, data)
            .map_err(|e| SysError::new("mount", target, e))
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> SysResult<()> {
        nix::mount::umount2(target, flags).map_err(|e| SysError::new("umount", target, e))
    }

    fn mount_setattr(&self, target: &Handle, set: MountAttrs, recursive: bool) -> SysResult<()> {
        let fd = target
            .fd()
            .ok_or_else(|| SysError::new("mount_setattr", target.host_path(), Errno::EBADF))?;
        // Only ever called on our detached clones: private, so nothing
        // mounted later on the host side (or by us) propagates into them.
        let attr = MountAttr {
            attr_set: set.bits(),
            attr_clr: 0,
            propagation: libc::MS_PRIVATE,
            userns_fd: 0,
        };
        let mut flags = libc::AT_EMPTY_PATH;
        if recursive {
            flags |= libc::AT_RECURSIVE;
        }
        // SAFETY: the path is a valid empty C string, `attr` is a live
        // `struct mount_attr` of the size we pass, and `fd` is open.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                fd.as_raw_fd(),
                c"".as_ptr(),
                flags as libc::c_uint,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc < 0 {
            return Err(SysError::new(
                "mount_setattr",
                target.host_path(),
                Errno::last(),
            ));
        }
        Ok(())
    }

    fn attach_loop(&self, image: &File, shown: &Path) -> SysResult<LoopDev> {
        attach_loop_fd(image.as_raw_fd(), shown, LO_FLAGS_READ_ONLY)
    }

    fn open_private_dir(&self, path: &Path, mode: u32) -> SysResult<Handle> {
        open_private_dir(path, mode)
    }

    fn create_sparse_file(&self, dir: &Handle, name: &str, size: u64) -> SysResult<Handle> {
        let shown = dir.host_path().join(name);
        let dirfd = root_only_dir(dir, name, "create")?;
        // A sparse file promises space it does not take: refuse to promise
        // more than the filesystem has free for unprivileged use now.
        let vfs =
            nix::sys::statvfs::fstatvfs(dirfd).map_err(|e| SysError::new("statvfs", &shown, e))?;
        let free = (vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64);
        if size > free {
            return Err(SysError::new("create", &shown, Errno::ENOSPC));
        }
        let fd = nix::fcntl::openat(
            Some(dirfd.as_raw_fd()),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| SysError::new("create", &shown, e))?;
        // SAFETY: openat(2) just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len =
            i64::try_from(size).map_err(|_| SysError::new("truncate", &shown, Errno::EFBIG))?;
        if let Err(e) = nix::unistd::ftruncate(&fd, len) {
            let _ = nix::unistd::unlinkat(
                Some(dirfd.as_raw_fd()),
                name,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            return Err(SysError::new("truncate", &shown, e));
        }
        let proc = proc_fd_path(fd.as_raw_fd());
        Ok(Handle::new(Some(fd), proc, shown))
    }

    fn lock_file(&self, dir: &Handle, name: &str, wait: Duration) -> SysResult<Handle> {
        lock_file(dir, name, wait)
    }

    fn attach_loop_rw(&self, file: &Handle) -> SysResult<LoopDev> {
        let fd = file
            .fd()
            .ok_or_else(|| SysError::new("LOOP_CONFIGURE", file.host_path(), Errno::EBADF))?;
        attach_loop_fd(fd.as_raw_fd(), file.host_path(), 0)
    }

    fn unlink_at(&self, dir: &Handle, name: &str) -> SysResult<()> {
        let shown = dir.host_path().join(name);
        let dirfd = dir
            .fd()
            .ok_or_else(|| SysError::new("unlink", &shown, Errno::EBADF))?;
        nix::unistd::unlinkat(
            Some(dirfd.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|e| SysError::new("unlink", &shown, e))
    }

    fn run_tool(&self, argv: &[&OsStr], timeout: Duration) -> SysResult<ToolOutput> {
        run_tool(argv, timeout)
    }

    fn spawn_daemon(
        &self,
        prepare: &dyn Fn() -> bool,
        program: &std::ffi::CStr,
        argv: &[CString],
        env: &[CString],
    ) -> SysResult<Pid> {
        let parent = nix::unistd::getpid();
        spawn_child(|| {
            if !prepare() {
                return 120;
            }
            // After the uid change, which clears it: the daemon dies with us.
            if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err() {
                return 121;
            }
            // We died before the signal was armed: it will never come.
            if nix::unistd::getppid() != parent {
                return 123;
            }
            // Not our stdio: a daemon logs to its own file.
            if let Ok(fd) = nix::fcntl::open(c"/dev/null", OFlag::O_RDWR, Mode::empty()) {
                for target in 0..3 {
                    let _ = nix::unistd::dup2(fd, target);
                }
            }
            let _ = nix::unistd::execve(program, argv, env);
            122
        })
    }

    fn chown_dir(&self, target: &Handle, uid: u32, gid: u32, mode: u32) -> SysResult<()> {
        let shown = target.host_path();
        let dirfd = target
            .fd()
            .ok_or_else(|| SysError::new("chown", shown, Errno::EBADF))?;
        // The handle may be O_PATH, which fchown/fchmod refuse; "." relative
        // to it is the very same inode, opened without any path walk or
        // magic link.
        let fd = nix::fcntl::openat(
            Some(dirfd.as_raw_fd()),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SysError::new("open", shown, e))?;
        // SAFETY: open(2) just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::unistd::fchown(
            fd.as_raw_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .map_err(|e| SysError::new("chown", shown, e))?;
        nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| SysError::new("chmod", shown, e))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> SysResult<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| SysError::new("mkdir", path, io_errno(&e)))
    }

    fn resolve_in_root(
        &self,
        root: &Path,
        path: &Path,
        create: Option<Create>,
    ) -> SysResult<Handle> {
        resolve(root, path, create, ResolveFlag::empty())
    }

    fn resolve_on_root_mount(
        &self,
        root: &Path,
        path: &Path,
        create: Option<Create>,
    ) -> SysResult<Handle> {
        resolve(root, path, create, ResolveFlag::RESOLVE_NO_XDEV)
    }

    fn open_beneath(&self, dir: &Handle, rel: &Path, create: Option<Create>) -> SysResult<Handle> {
        let shown = dir.host_path().join(rel);
        let dirfd = dir
            .fd()
            .ok_or_else(|| SysError::new("openat2", &shown, Errno::EBADF))?;
        let comps = components("resolve", rel)?;
        let strict = ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV;
        let open = |at: RawFd, name: &Path| -> Result<OwnedFd, Errno> {
            let how = OpenHow::new()
                .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                .resolve(strict);
            let fd = nix::fcntl::openat2(at, name, how)?;
            // SAFETY: openat2(2) just returned this descriptor and nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let mut parent = open(dirfd.as_raw_fd(), Path::new("."))
            .map_err(|e| SysError::new("openat2", &shown, e))?;
        for (i, name) in comps.iter().enumerate() {
            let name = Path::new(name);
            match open(parent.as_raw_fd(), name) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(SysError::new("openat2", &shown, e)),
            }
            let Some(create) = create else {
                return Err(SysError::new("openat2", &shown, Errno::ENOENT));
            };
            let last = i + 1 == comps.len();
            make_node(&parent, name.as_os_str(), last, create.kind, &shown)?;
            parent =
                open(parent.as_raw_fd(), name).map_err(|e| SysError::new("openat2", &shown, e))?;
        }
        Ok(handle_from_fd(parent))
    }

    fn symlink_at(&self, dir: &Handle, name: &str, target: &Path) -> SysResult<()> {
        let shown = dir.host_path().join(name);
        let dirfd = dir
            .fd()
            .ok_or_else(|| SysError::new("symlink", &shown, Errno::EBADF))?;
        if name.contains('/') || name.is_empty() || name == "." || name == ".." {
            return Err(SysError::new("symlink", &shown, Errno::EINVAL));
        }
        let owned = nix::fcntl::openat(
            Some(dirfd.as_raw_fd()),
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SysError::new("open", &shown, e))?;
        // SAFETY: openat(2) just returned this descriptor and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(owned) };
        Self::unlink_if_present("unlink", &owned, OsStr::new(name), &shown)?;
        nix::unistd::symlinkat(target, Some(owned.as_raw_fd()), name)
            .map_err(|e| SysError::new("symlink", &shown, e))
    }

    fn write_at(
        &self,
        dir: &Handle,
        name: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> SysResult<()> {
        let shown = dir.host_path().join(name);
        let dirfd = dir
            .fd()
            .ok_or_else(|| SysError::new("create", &shown, Errno::EBADF))?;
        if name.contains('/') || name.is_empty() || name == "." || name == ".." {
            return Err(SysError::new("create", &shown, Errno::EINVAL));
        }
        let fd = nix::fcntl::openat(
            Some(dirfd.as_raw_fd()),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| SysError::new("create", &shown, e))?;
        // SAFETY: openat(2) just returned this descriptor and nothing else owns it.
        let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.write_all(contents)
            .map_err(|e| SysError::new("write", &shown, io_errno(&e)))?;
        if let Some((uid, gid)) = owner {
            nix::unistd::fchown(
                file.as_raw_fd(),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
            )
            .map_err(|e| SysError::new("chown", &shown, e))?;
        }
        nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| SysError::new("chmod", &shown, e))
    }

    fn open_tree(&self, source: &Handle, recursive: bool) -> SysResult<Handle> {
        let shown = source.host_path();
        let fd = source
            .fd()
            .ok_or_else(|| SysError::new("open_tree", shown, Errno::EBADF))?;
        let mut flags =
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint;
        if recursive {
            flags |= libc::AT_RECURSIVE as libc::c_uint;
        }
        // SAFETY: the path is a valid empty C string and `fd` is open.
        let rc = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
        if rc < 0 {
            return Err(SysError::new("open_tree", shown, Errno::last()));
        }
        // SAFETY: open_tree(2) just returned this descriptor and nothing else owns it.
        let tree = unsafe { OwnedFd::from_raw_fd(rc as RawFd) };
        Ok(Handle::new(Some(tree), shown.to_owned(), shown.to_owned()))
    }

    fn fs_mount(&self, spec: &FsSpec<'_>) -> SysResult<Handle> {
        fs_mount(spec)
    }

    fn move_mount(&self, mount: &Handle, target: &Handle) -> SysResult<()> {
        let shown = target.host_path();
        let (Some(from), Some(to)) = (mount.fd(), target.fd()) else {
            return Err(SysError::new("move_mount", shown, Errno::EBADF));
        };
        // SAFETY: both paths are valid empty C strings and both fds are open.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                from.as_raw_fd(),
                c"".as_ptr(),
                to.as_raw_fd(),
                c"".as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
            )
        };
        if rc < 0 {
            return Err(SysError::new("move_mount", shown, Errno::last()));
        }
        Ok(())
    }

    fn write_in_root(&self, root: &Path, path: &Path, contents: &[u8], mode: u32) -> SysResult<()> {
        let shown = root.join(path.strip_prefix("/").unwrap_or(path));
        let (dirfd, name) = self.parent_in_root("write", root, path)?;
        Self::unlink_if_present("unlink", &dirfd, name, &shown)?;
        let fd = nix::fcntl::openat(
            Some(dirfd.as_raw_fd()),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| SysError::new("create", &shown, e))?;
        // SAFETY: openat(2) just returned this descriptor and nothing else owns it.
        let mut f = unsafe { File::from_raw_fd(fd) };
        f.write_all(contents)
            .map_err(|e| SysError::new("write", &shown, io_errno(&e)))?;
        nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| SysError::new("chmod", &shown, e))
    }

    fn symlink_in_root(&self, root: &Path, path: &Path, target: &Path) -> SysResult<()> {
        let shown = root.join(path.strip_prefix("/").unwrap_or(path));
        let (dirfd, name) = self.parent_in_root("symlink", root, path)?;
        Self::unlink_if_present("unlink", &dirfd, name, &shown)?;
        nix::unistd::symlinkat(target, Some(dirfd.as_raw_fd()), name)
            .map_err(|e| SysError::new("symlink", &shown, e))
    }

    fn open_as_user(&self, path: &Path, creds: &Creds) -> SysResult<(Handle, NodeKind)> {
        open_as_user(path, creds)
    }

    fn open_host(&self, path: &Path) -> SysResult<(Handle, NodeKind)> {
        let fd = nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| SysError::new("open", path, e))?;
        // SAFETY: open(2) just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st =
            nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| SysError::new("stat", path, e))?;
        let kind = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            NodeKind::Dir
        } else {
            NodeKind::File
        };
        Ok((handle_from_fd(fd), kind))
    }

    fn chroot(&self, path: &Path) -> SysResult<()> {
        nix::unistd::chroot(path).map_err(|e| SysError::new("chroot", path, e))
    }

    fn chdir(&self, path: &Path) -> SysResult<()> {
        nix::unistd::chdir(path).map_err(|e| SysError::new("chdir", path, e))
    }

    fn drop_bounding_set(&self) -> SysResult<()> {
        // Every number a u64 set can hold, not `cap_last_cap`: after a chroot,
        // or with a site mount over /proc, that file may be the user's.
        for cap in 0..64u32 {
            // SAFETY: PR_CAPBSET_DROP takes a capability number; no pointers.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc < 0 && Errno::last() != Errno::EINVAL {
                return Err(SysError::new(
                    "prctl(PR_CAPBSET_DROP)",
                    format!("cap {cap}"),
                    Errno::last(),
                ));
            }
        }
        Ok(())
    }

    fn clear_inheritable_and_ambient(&self) -> SysResult<()> {
        // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if rc < 0 {
            return Err(SysError::new(
                "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
                "",
                Errno::last(),
            ));
        }
        caps::clear(None, caps::CapSet::Inheritable)
            .map_err(|_| SysError::new("capset(inheritable)", "", Errno::EPERM))
    }

    fn set_no_new_privs(&self) -> SysResult<()> {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        if rc < 0 {
            return Err(SysError::new(
                "prctl(PR_SET_NO_NEW_PRIVS)",
                "",
                Errno::last(),
            ));
        }
        Ok(())
    }

    fn setgroups(&self, groups: &[u32]) -> SysResult<()> {
        let gids: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&gids).map_err(|e| SysError::new("setgroups", "", e))
    }

    fn setresgid(&self, gid: u32) -> SysResult<()> {
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g)
            .map_err(|e| SysError::new("setresgid", format!("gid {gid}"), e))
    }

    fn setresuid(&self, uid: u32) -> SysResult<()> {
        let u = Uid::from_raw(uid);
        nix::unistd::setresuid(u, u, u)
            .map_err(|e| SysError::new("setresuid", format!("uid {uid}"), e))
    }

    fn read_ids(&self) -> SysResult<Ids> {
        let u = nix::unistd::getresuid().map_err(|e| SysError::new("getresuid", "", e))?;
        let g = nix::unistd::getresgid().map_err(|e| SysError::new("getresgid", "", e))?;
        let groups = nix::unistd::getgroups().map_err(|e| SysError::new("getgroups", "", e))?;
        Ok(Ids {
            ruid: u.real.as_raw(),
            euid: u.effective.as_raw(),
            suid: u.saved.as_raw(),
            rgid: g.real.as_raw(),
            egid: g.effective.as_raw(),
            sgid: g.saved.as_raw(),
            groups: groups.into_iter().map(|g| g.as_raw()).collect(),
        })
    }

    fn read_caps(&self) -> SysResult<CapSets> {
        read_caps()
    }

    fn no_new_privs(&self) -> SysResult<bool> {
        // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers.
        let rc = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
        if rc < 0 {
            return Err(SysError::new(
                "prctl(PR_GET_NO_NEW_PRIVS)",
                "",
                Errno::last(),
            ));
        }
        Ok(rc == 1)
    }
}

/// Opens `path` inside `root` (`RESOLVE_IN_ROOT` plus `existing` for a path
/// that is there); what is missing is created by [`create_in_root`].
fn resolve(
    root: &Path,
    path: &Path,
    create: Option<Create>,
    existing: ResolveFlag,
) -> SysResult<Handle> {
    let shown = root.join(path.strip_prefix("/").unwrap_or(path));
    let comps = components("resolve", path)?;
    let rootfd = open_root(root)?;
    let rel: PathBuf = comps.iter().collect();
    match openat2_resolving(&rootfd, &rel, OFlag::O_PATH, existing) {
        Ok(fd) => return Ok(handle_from_fd(fd)),
        Err(Errno::ENOENT) if create.is_some() => {}
        Err(e) => return Err(SysError::new("openat2", &shown, e)),
    }
    let Some(create) = create else {
        return Err(SysError::new("openat2", &shown, Errno::ENOENT));
    };
    create_in_root(&rootfd, root, &comps, create, &shown)
}

/// The descriptor of `dir` to make `name` in: `dir` must be root's and
/// writable by nobody else, checked again on the very descriptor we create
/// through, and `name` a single component.
fn root_only_dir<'a>(
    dir: &'a Handle,
    name: &str,
    op: &'static str,
) -> SysResult<std::os::fd::BorrowedFd<'a>> {
    let shown = dir.host_path().join(name);
    let dirfd = dir
        .fd()
        .ok_or_else(|| SysError::new(op, &shown, Errno::EBADF))?;
    let st = nix::sys::stat::fstat(dirfd.as_raw_fd())
        .map_err(|e| SysError::new("stat", dir.host_path(), e))?;
    if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(SysError::new(
            "check owner and mode of",
            dir.host_path(),
            Errno::EPERM,
        ));
    }
    if name.contains('/') {
        return Err(SysError::new(op, &shown, Errno::EINVAL));
    }
    Ok(dirfd)
}

/// See [`Sys::lock_file`].
fn lock_file(dir: &Handle, name: &str, wait: Duration) -> SysResult<Handle> {
    let shown = dir.host_path().join(name);
    // Nobody else may create, replace or hold open the lock files in it.
    let dirfd = root_only_dir(dir, name, "lock")?;
    let fd = nix::fcntl::openat(
        Some(dirfd.as_raw_fd()),
        name,
        OFlag::O_CREAT | OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| SysError::new("open", &shown, e))?;
    // SAFETY: openat(2) just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| SysError::new("stat", &shown, e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != 0 {
        return Err(SysError::new(
            "check owner and type of",
            &shown,
            Errno::EPERM,
        ));
    }
    let deadline = Instant::now() + wait;
    loop {
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        match Errno::result(rc) {
            Ok(_) => break,
            Err(Errno::EWOULDBLOCK) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(SysError::new("flock", &shown, e)),
        }
    }
    let proc = proc_fd_path(fd.as_raw_fd());
    Ok(Handle::new(Some(fd), proc, shown))
}

/// See [`Sys::open_private_dir`].
fn open_private_dir(path: &Path, mode: u32) -> SysResult<Handle> {
    let op = "open private dir";
    if !path.is_absolute() {
        return Err(SysError::new(op, path, Errno::EINVAL));
    }
    let comps = components(op, path)?;
    let mut dir = open_root(Path::new("/"))?;
    let mut sofar = PathBuf::from("/");
    check_private_component(&dir, &sofar, comps.is_empty())?;
    let beneath = ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(beneath)
    };
    for (i, name) in comps.iter().enumerate() {
        sofar.push(name);
        let next = match nix::fcntl::openat2(dir.as_raw_fd(), Path::new(name), how()) {
            Err(Errno::ENOENT) => {
                match nix::sys::stat::mkdirat(
                    Some(dir.as_raw_fd()),
                    Path::new(name),
                    Mode::from_bits_truncate(mode),
                ) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(SysError::new("mkdir", &sofar, e)),
                }
                nix::fcntl::openat2(dir.as_raw_fd(), Path::new(name), how())
            }
            other => other,
        }
        .map_err(|e| SysError::new("openat2", &sofar, e))?;
        // SAFETY: openat2(2) just returned this descriptor and nothing else owns it.
        dir = unsafe { OwnedFd::from_raw_fd(next) };
        check_private_component(&dir, &sofar, i + 1 == comps.len())?;
    }
    Ok(handle_from_fd(dir))
}

/// Root's, and writable by others only when sticky (never for the last).
fn check_private_component(dir: &OwnedFd, shown: &Path, last: bool) -> SysResult<()> {
    let st = nix::sys::stat::fstat(dir.as_raw_fd()).map_err(|e| SysError::new("stat", shown, e))?;
    let others_write = st.st_mode & 0o022 != 0;
    let sticky = st.st_mode & libc::S_ISVTX != 0;
    if st.st_uid != 0 || (others_write && (last || !sticky)) {
        return Err(SysError::new(
            "check owner and mode of",
            shown,
            Errno::EPERM,
        ));
    }
    Ok(())
}

/// Creates the missing tail of `comps` inside `root`, one component at a
/// time, each prefix resolved inside the root and on its mount only
/// (`RESOLVE_NO_XDEV`), so neither a symlink nor a bound host directory can
/// make root create anything outside the container's own writable layer.
fn create_in_root(
    rootfd: &OwnedFd,
    root: &Path,
    comps: &[&OsStr],
    create: Create,
    shown: &Path,
) -> SysResult<Handle> {
    {
        let xdev = ResolveFlag::RESOLVE_NO_XDEV;
        let mut parent = openat2_resolving(
            rootfd,
            Path::new(""),
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            xdev,
        )
        .map_err(|e| SysError::new("openat2", root, e))?;
        let mut sofar = PathBuf::new();
        for (i, name) in comps.iter().enumerate() {
            sofar.push(name);
            let last = i + 1 == comps.len();
            match openat2_resolving(rootfd, &sofar, OFlag::O_PATH, xdev) {
                Ok(fd) => {
                    parent = fd;
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(SysError::new("openat2", shown, e)),
            }
            make_node(&parent, name, last, create.kind, &root.join(&sofar))?;
            parent = openat2_resolving(rootfd, &sofar, OFlag::O_PATH, xdev)
                .map_err(|e| SysError::new("openat2", shown, e))?;
        }
        Ok(handle_from_fd(parent))
    }
}

/// Creates `name` in `parent`: a regular file (0644) when it is the `last`
/// component and `kind` says so, a directory (0755) otherwise. Never follows
/// a symlink that appears at `name` meanwhile.
fn make_node(
    parent: &OwnedFd,
    name: &OsStr,
    last: bool,
    kind: NodeKind,
    shown: &Path,
) -> SysResult<()> {
    if last && kind == NodeKind::File {
        let fd = nix::fcntl::openat(
            Some(parent.as_raw_fd()),
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| SysError::new("create", shown, e))?;
        let _ = nix::unistd::close(fd);
        return Ok(());
    }
    match nix::sys::stat::mkdirat(
        Some(parent.as_raw_fd()),
        name,
        Mode::from_bits_truncate(0o755),
    ) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(SysError::new("mkdir", shown, e)),
    }
}

/// `fsopen` + one `fsconfig` per parameter + `FSCONFIG_CMD_CREATE` + `fsmount`
/// with the attributes: a mount that exists only as our descriptor until
/// [`Sys::move_mount`] places it.
fn fs_mount(spec: &FsSpec<'_>) -> SysResult<Handle> {
    let shown = PathBuf::from(format!("{} ({})", spec.fstype, spec.source));
    let err = |op: &'static str| SysError::new(op, &shown, Errno::last());
    let fstype =
        CString::new(spec.fstype).map_err(|_| SysError::new("fsopen", &shown, Errno::EINVAL))?;
    // SAFETY: `fstype` is a valid NUL-terminated string.
    let rc = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    if rc < 0 {
        return Err(err("fsopen"));
    }
    // SAFETY: fsopen(2) just returned this descriptor and nothing else owns it.
    let fsfd = unsafe { OwnedFd::from_raw_fd(rc as RawFd) };
    let config = |cmd: libc::c_uint, key: Option<&str>, value: Option<&str>| -> SysResult<()> {
        let key = key
            .map(CString::new)
            .transpose()
            .map_err(|_| SysError::new("fsconfig", &shown, Errno::EINVAL))?;
        let value = value
            .map(CString::new)
            .transpose()
            .map_err(|_| SysError::new("fsconfig", &shown, Errno::EINVAL))?;
        let kp = key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr());
        let vp = value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: the pointers are null or valid NUL-terminated strings that
        // outlive the call; `fsfd` is open.
        let rc = unsafe { libc::syscall(libc::SYS_fsconfig, fsfd.as_raw_fd(), cmd, kp, vp, 0) };
        if rc < 0 {
            return Err(err("fsconfig"));
        }
        Ok(())
    };
    if !spec.source.is_empty() {
        config(FSCONFIG_SET_STRING, Some("source"), Some(spec.source))?;
    }
    for param in spec.data.split(',').filter(|p| !p.is_empty()) {
        match param.split_once('=') {
            Some((k, v)) => config(FSCONFIG_SET_STRING, Some(k), Some(v))?,
            None => config(FSCONFIG_SET_FLAG, Some(param), None)?,
        }
    }
    if spec.attrs.rdonly {
        // MOUNT_ATTR_RDONLY only concerns the mount; the superblock must be
        // read-only too, or a read-only device (the image's loop) is refused.
        config(FSCONFIG_SET_FLAG, Some("ro"), None)?;
    }
    config(FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: `fsfd` is an open filesystem context; no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fsfd.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            spec.attrs.bits() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(err("fsmount"));
    }
    // SAFETY: fsmount(2) just returned this descriptor and nothing else owns it.
    let mnt = unsafe { OwnedFd::from_raw_fd(rc as RawFd) };
    Ok(Handle::new(Some(mnt), shown.clone(), shown))
}

/// Attaches a free loop device with autoclear (and `extra_flags`) to the open
/// file `backing`; `name` is for messages and the device's file name field.
fn attach_loop_fd(backing: RawFd, name: &Path, extra_flags: u32) -> SysResult<LoopDev> {
    let image = name;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| SysError::new("open", "/dev/loop-control", io_errno(&e)))?;
    let mut last = Errno::EBUSY;
    for _ in 0..LOOP_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(SysError::new(
                "LOOP_CTL_GET_FREE",
                "/dev/loop-control",
                Errno::last(),
            ));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        // Without udev (containers, test nodes) the node of a freshly
        // allocated device may be missing; create it ourselves.
        if std::fs::symlink_metadata(&dev).is_err() {
            let rdev = nix::sys::stat::makedev(LOOP_MAJOR, n as u64);
            match nix::sys::stat::mknod(&dev, SFlag::S_IFBLK, Mode::from_bits_truncate(0o660), rdev)
            {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(SysError::new("mknod", &dev, e)),
            }
        }
        let devf = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .map_err(|e| SysError::new("open", &dev, io_errno(&e)))?;
        // SAFETY: all-zero is a valid loop_config (no offset, no key, no name).
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing as u32;
        cfg.info.lo_flags = extra_flags | LO_FLAGS_AUTOCLEAR;
        let bytes = image.as_os_str().as_bytes();
        let len = bytes.len().min(63);
        cfg.info.lo_file_name[..len].copy_from_slice(&bytes[..len]);
        // SAFETY: `cfg` is a live `struct loop_config`, both fds are open.
        let rc = unsafe {
            libc::ioctl(
                devf.as_raw_fd(),
                LOOP_CONFIGURE as _,
                &cfg as *const LoopConfig,
            )
        };
        if rc == 0 {
            return Ok(LoopDev {
                path: dev,
                _fd: Some(devf.into()),
            });
        }
        last = Errno::last();
        if last != Errno::EBUSY {
            return Err(SysError::new("LOOP_CONFIGURE", &dev, last));
        }
        tracing::debug!(device = %dev.display(), "loop device taken by a concurrent setup, retrying");
    }
    Err(SysError::new("LOOP_CONFIGURE", image, last))
}

/// Bytes of a tool's stderr kept for the error message.
const TOOL_STDERR_KEEP: usize = 2000;

/// Spawns a helper (no shell, empty environment), polls for its exit without
/// threads (we may run inside slurmstepd), and kills it at the deadline.
fn run_tool(argv: &[&OsStr], timeout: Duration) -> SysResult<ToolOutput> {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let Some((prog, args)) = argv.split_first() else {
        return Err(SysError::new("exec", "", Errno::EINVAL));
    };
    let prog_path = Path::new(prog);
    if !prog_path.is_absolute() {
        return Err(SysError::new("exec", prog_path, Errno::EINVAL));
    }
    let mut child = Command::new(prog)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SysError::new("exec", prog_path, io_errno(&e)))?;
    // Drained while the tool runs: a tool that writes more than a pipe
    // holds would otherwise block until the deadline and be reported as
    // hung. Only the tail is kept, and a descendant that keeps the pipe open
    // after the tool exits cannot hold us (see the bounded wait below).
    let (tail_tx, tail_rx) = std::sync::mpsc::channel();
    if let Some(mut pipe) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * TOOL_STDERR_KEEP {
                    tail.drain(..tail.len() - TOOL_STDERR_KEEP);
                }
            }
            let _ = tail_tx.send(tail);
        });
    }
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SysError::new("exec", prog_path, Errno::ETIMEDOUT));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(SysError::new("wait for", prog_path, io_errno(&e))),
        }
    };
    let tail = tail_rx
        .recv_timeout(Duration::from_secs(1))
        .unwrap_or_default();
    let mut stderr = String::from_utf8_lossy(&tail).into_owned();
    if stderr.len() > TOOL_STDERR_KEEP {
        let mut cut = stderr.len() - TOOL_STDERR_KEEP;
        while !stderr.is_char_boundary(cut) {
            cut += 1;
        }
        stderr.drain(..cut);
    }
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    Ok(ToolOutput {
        status: code,
        stderr: stderr.trim().to_owned(),
    })
}

/// `struct __user_cap_header_struct` from <linux/capability.h>.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The calling thread's capability sets, asked of the kernel directly.
fn read_caps() -> SysResult<CapSets> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `hdr` and the two-element `data` array are what capget(2)
    // expects for version 3, and live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc < 0 {
        return Err(SysError::new("capget", "", Errno::last()));
    }
    let wide = |f: fn(&CapData) -> u32| u64::from(f(&data[0])) | (u64::from(f(&data[1])) << 32);
    let mut bounding = 0u64;
    let mut ambient = 0u64;
    for cap in 0..64u32 {
        // SAFETY: PR_CAPBSET_READ takes a capability number; no pointers.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        match rc {
            1 => bounding |= 1 << cap,
            0 => {}
            _ if Errno::last() == Errno::EINVAL => {}
            _ => {
                return Err(SysError::new(
                    "prctl(PR_CAPBSET_READ)",
                    format!("cap {cap}"),
                    Errno::last(),
                ))
            }
        }
        // SAFETY: PR_CAP_AMBIENT_IS_SET takes a capability number; no pointers.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_IS_SET as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        match rc {
            1 => ambient |= 1 << cap,
            0 => {}
            _ if Errno::last() == Errno::EINVAL => {}
            _ => {
                return Err(SysError::new(
                    "prctl(PR_CAP_AMBIENT_IS_SET)",
                    format!("cap {cap}"),
                    Errno::last(),
                ))
            }
        }
    }
    Ok(CapSets {
        inheritable: wide(|d| d.inheritable),
        permitted: wide(|d| d.permitted),
        effective: wide(|d| d.effective),
        bounding,
        ambient,
    })
}

/// `CapInh`/`CapPrm`/`CapEff`/`CapBnd`/`CapAmb` from a `/proc/*/status` text.
pub fn parse_cap_sets(status: &str) -> Option<CapSets> {
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some(CapSets {
        inheritable: get("CapInh:")?,
        permitted: get("CapPrm:")?,
        effective: get("CapEff:")?,
        bounding: get("CapBnd:")?,
        ambient: get("CapAmb:")?,
    })
}

/// Opens `path` in a forked child that has become the user, and receives the
/// descriptor over a socketpair (`SCM_RIGHTS`). The kernel thus checks the
/// user's own permissions on every component, including ACLs and root-squashed
/// network filesystems, which no stat-based check reproduces.
fn open_as_user(path: &Path, creds: &Creds) -> SysResult<(Handle, NodeKind)> {
    open_as_user_within(path, creds, super::USER_OPEN_TIMEOUT)
}

fn open_as_user_within(
    path: &Path,
    creds: &Creds,
    timeout: Duration,
) -> SysResult<(Handle, NodeKind)> {
    let op = "open as user";
    let cpath = cpath(op, path)?;
    let gids: Vec<Gid> = creds.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let (ours, theirs) = socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SysError::new("socketpair", path, e))?;
    let parent = nix::unistd::getpid();
    // SAFETY: the child only makes raw syscalls on data prepared before the
    // fork (no allocation, no locks) and leaves with _exit.
    match unsafe { nix::unistd::fork() }.map_err(|e| SysError::new("fork", path, e))? {
        ForkResult::Child => {
            drop(ours);
            let result: Result<(RawFd, u8), Errno> = (|| {
                nix::unistd::setgroups(&gids)?;
                let g = Gid::from_raw(creds.gid);
                nix::unistd::setresgid(g, g, g)?;
                let u = Uid::from_raw(creds.uid);
                nix::unistd::setresuid(u, u, u)?;
                // After the uid change, which clears it: if root gives up on
                // us (or dies), we die too rather than hold its namespace.
                // SAFETY: PR_SET_PDEATHSIG takes a signal number; no pointers.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
                if nix::unistd::getppid() != parent {
                    return Err(Errno::ESRCH);
                }
                // Hold nothing of the privileged parent's: no descriptor it
                // opened can be reached through /proc/self/fd.
                close_all_but(theirs.as_raw_fd());
                // O_NONBLOCK so a fifo cannot hang us; O_RDONLY (not O_PATH)
                // so read permission on the source itself is required; no
                // magic link (/proc/*/fd/N) may stand in for a path walk that
                // the user's search permissions would refuse.
                let how = OpenHowRaw {
                    flags: (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
                        as u64,
                    mode: 0,
                    resolve: libc::RESOLVE_NO_MAGICLINKS,
                };
                // SAFETY: `cpath` is a valid NUL-terminated string and `how`
                // a live `struct open_how` of the size passed.
                let fd = unsafe {
                    libc::syscall(
                        libc::SYS_openat2,
                        libc::AT_FDCWD,
                        cpath.as_ptr(),
                        &how as *const OpenHowRaw,
                        std::mem::size_of::<OpenHowRaw>(),
                    )
                };
                if fd < 0 {
                    return Err(Errno::last());
                }
                let fd = fd as RawFd;
                let st = nix::sys::stat::fstat(fd)?;
                let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                    SFlag::S_IFDIR => b'd',
                    SFlag::S_IFREG => b'f',
                    _ => return Err(Errno::EPERM),
                };
                Ok((fd, kind))
            })();
            let code = match result {
                Ok((fd, kind)) => i32::from(!send_fd(theirs.as_raw_fd(), fd, kind)),
                Err(e) => {
                    let mut buf = [b'e', 0, 0, 0, 0];
                    buf[1..].copy_from_slice(&(e as i32).to_le_bytes());
                    let _ = socket::send(theirs.as_raw_fd(), &buf, MsgFlags::empty());
                    0
                }
            };
            // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            if !readable_within(&ours, timeout) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                reap_within(child, Duration::from_secs(2));
                return Err(SysError::new(op, path, Errno::ETIMEDOUT));
            }
            let received = receive_fd(&ours, path);
            let _ = waitpid(child, None);
            received
        }
    }
}

/// True once `sock` has data (or its peer closed) within `timeout`.
fn readable_within(sock: &OwnedFd, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        match rc {
            n if n > 0 => return true,
            0 => return false,
            _ if Errno::last() == Errno::EINTR && !left.is_zero() => continue,
            _ => return false,
        }
    }
}

/// Reaps a killed child, giving up after `timeout` (one stuck in an
/// uninterruptible wait stays a zombie until we exit; its death signal and
/// SIGKILL are already pending).
fn reap_within(child: Pid, timeout: Duration) {
    use nix::sys::wait::WaitPidFlag;
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => return,
        }
    }
    tracing::warn!(
        pid = child.as_raw(),
        "a volume-source opener did not exit after SIGKILL"
    );
}

/// `sendmsg` of one descriptor and a 5-byte reply, with the control buffer on
/// the stack: this runs in a forked child of a possibly multi-threaded
/// process, where allocating could deadlock on a lock another thread held.
fn send_fd(sock: RawFd, fd: RawFd, kind: u8) -> bool {
    #[repr(C, align(8))]
    struct ControlBuf([u8; 64]);
    let mut data = [kind, 0, 0, 0, 0];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut control = ControlBuf([0; 64]);
    // SAFETY: an all-zero msghdr is valid (no iov, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: msg_control points at 64 aligned bytes, more than the
    // CMSG_SPACE of one int, so the first header and its data fit; `msg`,
    // `iov`, `data` and `control` live until sendmsg returns.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return false;
        }
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        libc::sendmsg(sock, &msg, 0) >= 0
    }
}

/// `struct open_how` from <linux/openat2.h>, built on the stack so the forked
/// child of a multi-threaded slurmstepd never allocates.
#[repr(C)]
struct OpenHowRaw {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Closes every descriptor above stderr except `keep` (`close_range(2)`).
fn close_all_but(keep: RawFd) {
    let keep = keep as libc::c_uint;
    // SAFETY: close_range takes integers only; closing descriptors we do not
    // use afterwards is harmless.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
    }
}

fn receive_fd(sock: &OwnedFd, path: &Path) -> SysResult<(Handle, NodeKind)> {
    let op = "open as user";
    let mut buf = [0u8; 5];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = loop {
        match socket::recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            other => break other.map_err(|e| SysError::new("recvmsg", path, e))?,
        }
    };
    let mut fd = None;
    for c in msg.cmsgs().map_err(|e| SysError::new("recvmsg", path, e))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for f in fds {
                // SAFETY: the kernel just installed this descriptor for us.
                let owned = unsafe { OwnedFd::from_raw_fd(f) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
        }
    }
    let n = msg.bytes;
    match (buf[0], fd) {
        (b'd', Some(fd)) if n >= 1 => Ok((handle_from_fd(fd), NodeKind::Dir)),
        (b'f', Some(fd)) if n >= 1 => Ok((handle_from_fd(fd), NodeKind::File)),
        (b'e', _) => {
            let raw = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
            Err(SysError::new(op, path, Errno::from_raw(raw)))
        }
        _ => Err(SysError::new(op, path, Errno::EIO)),
    }
}

/// Ignores `signal` (or restores its default action). Ignoring is for
/// signals whose default would kill us mid-setup (SIGXFSZ): the syscall
/// fails instead. An ignored signal stays ignored across exec, so restore it.
pub fn set_signal_ignored(signal: nix::sys::signal::Signal, ignored: bool) {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let handler = if ignored {
        SigHandler::SigIgn
    } else {
        SigHandler::SigDfl
    };
    let action = SigAction::new(handler, SaFlags::empty(), SigSet::empty());
    // SAFETY: SIG_IGN and SIG_DFL install no handler function, so nothing
    // can run in signal context.
    let _ = unsafe { sigaction(signal, &action) };
}

/// Runs `f` in a forked child and returns its exit code (128+signal when
/// killed). For tests and tools that must not change the caller's process
/// state; the caller should have no other threads doing allocation-heavy work.
pub fn run_in_child(f: impl FnOnce() -> i32) -> SysResult<i32> {
    wait_for(spawn_child(f)?)
}

/// Forks a child that runs `f` and exits with its result (101 on panic);
/// returns the child's pid without waiting, e.g. to signal it.
pub fn spawn_child(f: impl FnOnce() -> i32) -> SysResult<Pid> {
    // SAFETY: the child runs `f` and leaves with _exit; it never returns into
    // the caller's stack frames.
    match unsafe { nix::unistd::fork() }.map_err(|e| SysError::new("fork", "", e))? {
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: _exit is async-signal-safe and skips the parent's atexit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Waits for `child`, mapping a signal death to 128+signal like a shell does.
pub fn wait_for(child: Pid) -> SysResult<i32> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(SysError::new("waitpid", format!("pid {child}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_sets_are_read_from_a_status_text() {
        let text = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";
        let c = parse_cap_sets(text).unwrap();
        assert_eq!(c.permitted, 0x1ff_ffff_ffff);
        assert_eq!(c.bounding, 0x1ff_ffff_ffff);
        assert!(!c.all_empty());
        assert!(parse_cap_sets("Name:\tx\n").is_none());
    }

    #[test]
    fn relative_escapes_are_refused_before_any_call() {
        assert!(components("x", Path::new("/a/../b")).is_err());
        assert_eq!(components("x", Path::new("/a/./b")).unwrap().len(), 2);
    }

    #[test]
    fn unreadable_file_cannot_be_opened_as_another_user() {
        if !nix::unistd::geteuid().is_root() {
            test_skip::skip(
                "unreadable_file_cannot_be_opened_as_another_user",
                "needs root",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = Creds {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        let err = RealSys.open_as_user(&secret, &nobody).unwrap_err();
        assert_eq!(err.errno, Errno::EACCES, "{err}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (h, kind) = RealSys.open_as_user(&secret, &nobody).unwrap();
        assert_eq!(kind, NodeKind::File);
        assert_eq!(h.host_path(), std::fs::canonicalize(&secret).unwrap());
        let (_, kind) = RealSys.open_as_user(dir.path(), &nobody).unwrap();
        assert_eq!(kind, NodeKind::Dir);
    }

    /// A FUSE filesystem whose daemon never answers (we never reply to the
    /// kernel's INIT) stands for a user's hung FUSE mount or a dead NFS
    /// server: the open must give up at its deadline, not hang root.
    #[test]
    fn open_as_user_gives_up_on_a_filesystem_that_never_answers() {
        if !nix::unistd::geteuid().is_root() {
            test_skip::skip(
                "open_as_user_gives_up_on_a_filesystem_that_never_answers",
                "needs root",
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("hung");
        std::fs::create_dir(&mnt).unwrap();
        let fuse = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("/dev/fuse");
        let data = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,allow_other",
            fuse.as_raw_fd()
        );
        nix::mount::mount(
            Some("shifter-test-hung"),
            &mnt,
            Some("fuse"),
            MsFlags::empty(),
            Some(data.as_str()),
        )
        .expect("mount fuse");
        let nobody = Creds {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        };
        let started = std::time::Instant::now();
        let res = open_as_user_within(&mnt.join("data"), &nobody, Duration::from_secs(1));
        let took = started.elapsed();
        let _ = nix::mount::umount2(&mnt, MntFlags::MNT_DETACH);
        drop(fuse);
        let err = res.expect_err("opened a path on a filesystem that never answers");
        assert_eq!(err.errno, Errno::ETIMEDOUT, "{err}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }

    #[test]
    fn symlink_to_slash_resolves_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../etc", root.join("up")).unwrap();
        std::os::unix::fs::symlink("/nowhere/at/all", root.join("dangling")).unwrap();
        // A dangling link is refused rather than guessed at; nothing is created.
        let err = RealSys
            .resolve_in_root(root, Path::new("/dangling/x"), Create::here(NodeKind::Dir))
            .unwrap_err();
        assert_eq!(err.errno, Errno::ENOENT);
        assert!(!root.join("nowhere").exists());
        std::fs::create_dir(root.join("etc")).unwrap();
        let h = RealSys
            .resolve_in_root(root, Path::new("/escape/data"), Create::here(NodeKind::Dir))
            .unwrap();
        let canon = std::fs::canonicalize(root).unwrap();
        assert_eq!(h.host_path(), canon.join("data"));
        let h = RealSys
            .resolve_in_root(root, Path::new("/up/passwd"), Create::here(NodeKind::File))
            .unwrap();
        assert_eq!(h.host_path(), canon.join("etc/passwd"));
        assert!(root.join("etc/passwd").is_file());
    }

    #[test]
    fn writing_in_root_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("etc/passwd")).unwrap();
        RealSys
            .write_in_root(dir.path(), Path::new("/etc/passwd"), b"new\n", 0o644)
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/passwd")).unwrap(),
            "new\n"
        );
        assert!(!std::fs::symlink_metadata(dir.path().join("etc/passwd"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn forked_child_reports_its_exit_code() {
        assert_eq!(run_in_child(|| 7).unwrap(), 7);
    }

    #[test]
    fn helper_program_reports_its_exit_and_stderr_and_is_killed_at_the_deadline() {
        let argv = [
            OsStr::new("/bin/sh"),
            OsStr::new("-c"),
            OsStr::new("echo \"env=$HOME\" >&2; exit 3"),
        ];
        let out = run_tool(&argv, Duration::from_secs(10)).unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stderr, "env=", "the environment is not empty");
        let started = std::time::Instant::now();
        let argv = [OsStr::new("/bin/sleep"), OsStr::new("30")];
        let err = run_tool(&argv, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.errno, Errno::ETIMEDOUT);
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = run_tool(&[OsStr::new("sleep")], Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.errno, Errno::EINVAL, "a relative program is refused");
    }

    #[test]
    fn helper_program_that_floods_stderr_or_leaves_a_child_holding_it_is_not_taken_for_hung() {
        // 1 MiB is far more than a pipe holds: the tool only exits if its
        // stderr is read while it runs.
        let argv = [
            OsStr::new("/bin/sh"),
            OsStr::new("-c"),
            OsStr::new("head -c 1048576 /dev/zero | tr '\\0' x >&2; echo last >&2; exit 4"),
        ];
        let out = run_tool(&argv, Duration::from_secs(20)).unwrap();
        assert_eq!(out.status, 4);
        assert!(
            out.stderr.ends_with("xlast"),
            "{:?}",
            &out.stderr[out.stderr.len() - 40..]
        );
        assert!(out.stderr.len() <= TOOL_STDERR_KEEP);
        // A background child keeps the pipe open after the tool has exited.
        let started = std::time::Instant::now();
        let argv = [
            OsStr::new("/bin/sh"),
            OsStr::new("-c"),
            OsStr::new("sleep 30 & echo bye >&2; exit 0"),
        ];
        let out = run_tool(&argv, Duration::from_secs(20)).unwrap();
        assert_eq!(out.status, 0);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn cache_backing_file_is_sparse_private_and_only_made_in_a_root_only_dir() {
        if !nix::unistd::geteuid().is_root() {
            test_skip::skip(
                "cache_backing_file_is_sparse_private_and_only_made_in_a_root_only_dir",
                "needs root",
            );
            return;
        }
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = |p: &Path| RealSys.open_private_dir(p, 0o700);
        let d = open(&dir).unwrap();
        let h = RealSys.create_sparse_file(&d, "c.xfs", 1 << 30).unwrap();
        let md = std::fs::metadata(dir.join("c.xfs")).unwrap();
        assert_eq!(md.len(), 1 << 30);
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert!(md.blocks() < 16, "not sparse: {} blocks", md.blocks());
        assert_eq!(h.host_path(), dir.join("c.xfs"));
        RealSys.unlink_at(&d, "c.xfs").unwrap();
        assert!(!dir.join("c.xfs").exists());
        // More than the filesystem has free is never promised.
        let err = RealSys
            .create_sparse_file(&d, "huge.xfs", 1 << 60)
            .unwrap_err();
        assert_eq!(err.errno, Errno::ENOSPC);
        assert!(!dir.join("huge.xfs").exists());
        // O_EXCL: an existing name is never reused.
        std::fs::write(dir.join("taken"), "").unwrap();
        let err = RealSys
            .create_sparse_file(&d, "taken", 1 << 20)
            .unwrap_err();
        assert_eq!(err.errno, Errno::EEXIST);
        // Missing components are made 0700 by root, through /tmp (sticky).
        let made = dir.join("a/b");
        open(&made).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o7777, 0o700);
        // A directory others can write to, one owned by a user, a symlink
        // anywhere on the way, or a user's directory above a good one are all
        // refused, and nothing is created there.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(open(&dir).unwrap_err().errno, Errno::EPERM);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&dir, Some(Uid::from_raw(65534)), None).unwrap();
        assert_eq!(open(&dir).unwrap_err().errno, Errno::EPERM);
        assert_eq!(open(&dir.join("a")).unwrap_err().errno, Errno::EPERM);
        assert_eq!(open(&dir.join("new")).unwrap_err().errno, Errno::EPERM);
        assert!(!dir.join("new").exists());
        nix::unistd::chown(&dir, Some(Uid::from_raw(0)), None).unwrap();
        let link = top.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        for p in [link.clone(), link.join("planted")] {
            let e = open(&p).unwrap_err().errno;
            assert!(
                matches!(e, Errno::ELOOP | Errno::ENOTDIR),
                "{}: {e}",
                p.display()
            );
        }
        assert!(!dir.join("planted").exists());
    }
}
