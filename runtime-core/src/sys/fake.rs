//! A recording fake of [`Sys`] for unit tests: every call is appended to a log
//! as a [`Call`], failures can be injected, and the credential calls update a
//! simulated process state so read-back checks can be exercised.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

use super::{
    CapSets, Create, Creds, FsSpec, Handle, Ids, LoopDev, MntFlags, MountAttrs, MsFlags, NodeKind,
    Sys, SysError, SysResult, ToolOutput,
};

/// One recorded kernel call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    UnshareMountNs,
    Mount {
        source: Option<PathBuf>,
        target: PathBuf,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount {
        target: PathBuf,
        flags: MntFlags,
    },
    MountSetattr {
        target: PathBuf,
        set: MountAttrs,
        recursive: bool,
    },
    /// A detached clone of `source`; its handle's path is `tree:<source>`.
    OpenTree {
        source: PathBuf,
        recursive: bool,
    },
    /// A detached new filesystem; its handle's path is `fs:<fstype>:<source>`.
    FsMount {
        fstype: String,
        source: String,
        data: String,
        attrs: MountAttrs,
    },
    MoveMount {
        mount: PathBuf,
        target: PathBuf,
    },
    OpenBeneath {
        dir: PathBuf,
        rel: PathBuf,
        create: Option<Create>,
    },
    AttachLoop(PathBuf),
    CreateSparse {
        dir: PathBuf,
        name: String,
        size: u64,
    },
    AttachLoopRw(PathBuf),
    LockFile(PathBuf),
    Unlink(PathBuf),
    RunTool(Vec<String>),
    /// The daemon's program and argv; the calls its `prepare` made follow.
    SpawnDaemon(Vec<String>),
    ChownDir {
        path: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    MkdirAll(PathBuf),
    OpenPrivateDir(PathBuf),
    Resolve {
        root: PathBuf,
        path: PathBuf,
        create: Option<Create>,
        /// `resolve_on_root_mount` (no crossing of any mount) rather than
        /// `resolve_in_root`.
        on_root_mount: bool,
    },
    Write {
        path: PathBuf,
        contents: String,
        mode: u32,
    },
    WriteAt {
        path: PathBuf,
        contents: String,
        mode: u32,
        owner: Option<(u32, u32)>,
    },
    Symlink {
        path: PathBuf,
        target: PathBuf,
    },
    OpenAsUser {
        path: PathBuf,
        uid: u32,
    },
    OpenHost(PathBuf),
    Chroot(PathBuf),
    Chdir(PathBuf),
    DropBoundingSet,
    ClearInheritableAndAmbient,
    SetNoNewPrivs,
    Setgroups(Vec<u32>),
    Setresgid(u32),
    Setresuid(u32),
}

type Injector = Box<dyn Fn(&Call) -> Option<Errno>>;

/// The fake kernel. Not thread-safe, like the code it stands in for.
pub struct FakeSys {
    calls: RefCell<Vec<Call>>,
    fail: RefCell<Vec<Injector>>,
    kinds: RefCell<BTreeMap<PathBuf, NodeKind>>,
    state: RefCell<(Ids, CapSets, bool)>,
    /// Makes `setresuid` leave the saved uid at 0, to test read-back checks.
    pub broken_setresuid: std::cell::Cell<bool>,
    /// What `run_tool` reports (default: exit 0, nothing on stderr).
    pub tool_output: RefCell<ToolOutput>,
}

impl std::fmt::Debug for FakeSys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSys")
            .field("calls", &self.calls.borrow())
            .finish()
    }
}

impl Default for FakeSys {
    fn default() -> Self {
        FakeSys {
            calls: RefCell::default(),
            fail: RefCell::default(),
            kinds: RefCell::default(),
            state: RefCell::new((
                Ids {
                    ruid: 0,
                    euid: 0,
                    suid: 0,
                    rgid: 0,
                    egid: 0,
                    sgid: 0,
                    groups: vec![0],
                },
                CapSets {
                    inheritable: 0,
                    permitted: 0x1ff_ffff_ffff,
                    effective: 0x1ff_ffff_ffff,
                    bounding: 0x1ff_ffff_ffff,
                    ambient: 0,
                },
                false,
            )),
            broken_setresuid: std::cell::Cell::new(false),
            tool_output: RefCell::new(ToolOutput {
                status: 0,
                stderr: String::new(),
            }),
        }
    }
}

impl FakeSys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    /// Only the mount-changing calls (mount, umount, setattr), in order.
    pub fn mount_calls(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| {
                matches!(
                    c,
                    Call::Mount { .. }
                        | Call::Umount { .. }
                        | Call::MountSetattr { .. }
                        | Call::OpenTree { .. }
                        | Call::FsMount { .. }
                        | Call::MoveMount { .. }
                )
            })
            .collect()
    }

    /// Fails the first (and every later) call for which `pred` is true with `errno`.
    pub fn fail_when(&self, errno: Errno, pred: impl Fn(&Call) -> bool + 'static) {
        self.fail
            .borrow_mut()
            .push(Box::new(move |c| if pred(c) { Some(errno) } else { None }));
    }

    /// Declares what `open_as_user`/`open_host` find at `path` (default: a directory).
    pub fn set_kind(&self, path: impl Into<PathBuf>, kind: NodeKind) {
        self.kinds.borrow_mut().insert(path.into(), kind);
    }

    fn record(&self, call: Call, path: &Path, op: &'static str) -> SysResult<()> {
        let failure = self.fail.borrow().iter().find_map(|f| f(&call));
        self.calls.borrow_mut().push(call);
        match failure {
            Some(e) => Err(SysError::new(op, path, e)),
            None => Ok(()),
        }
    }

    fn resolve(
        &self,
        root: &Path,
        path: &Path,
        create: Option<Create>,
        on_root_mount: bool,
    ) -> SysResult<Handle> {
        self.record(
            Call::Resolve {
                root: root.to_owned(),
                path: path.to_owned(),
                create,
                on_root_mount,
            },
            path,
            "openat2",
        )?;
        Ok(Self::handle(
            root.join(path.strip_prefix("/").unwrap_or(path)),
        ))
    }

    fn handle(p: PathBuf) -> Handle {
        Handle::new(None, p.clone(), p)
    }
}

impl Sys for FakeSys {
    fn unshare_mount_ns(&self) -> SysResult<()> {
        self.record(Call::UnshareMountNs, Path::new(""), "unshare")
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult<()> {
        self.record(
            Call::Mount {
                source: source.map(Path::to_owned),
                target: target.to_owned(),
                fstype: fstype.map(str::to_owned),
                flags,
                data: data.map(str::to_owned),
            },
            target,
            "mount",
        )
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> SysResult<()> {
        self.record(
            Call::Umount {
                target: target.to_owned(),
                flags,
            },
            target,
            "umount",
        )
    }

    fn mount_setattr(&self, target: &Handle, set: MountAttrs, recursive: bool) -> SysResult<()> {
        self.record(
            Call::MountSetattr {
                target: target.path().to_owned(),
                set,
                recursive,
            },
            target.path(),
            "mount_setattr",
        )
    }

    fn open_tree(&self, source: &Handle, recursive: bool) -> SysResult<Handle> {
        let p = source.path().to_owned();
        self.record(
            Call::OpenTree {
                source: p.clone(),
                recursive,
            },
            &p,
            "open_tree",
        )?;
        Ok(Self::handle(PathBuf::from(format!("tree:{}", p.display()))))
    }

    fn fs_mount(&self, spec: &FsSpec<'_>) -> SysResult<Handle> {
        let p = PathBuf::from(format!("fs:{}:{}", spec.fstype, spec.source));
        self.record(
            Call::FsMount {
                fstype: spec.fstype.to_owned(),
                source: spec.source.to_owned(),
                data: spec.data.to_owned(),
                attrs: spec.attrs,
            },
            &p,
            "fsmount",
        )?;
        Ok(Self::handle(p))
    }

    fn move_mount(&self, mount: &Handle, target: &Handle) -> SysResult<()> {
        self.record(
            Call::MoveMount {
                mount: mount.path().to_owned(),
                target: target.path().to_owned(),
            },
            target.path(),
            "move_mount",
        )
    }

    fn attach_loop(&self, _image: &std::fs::File, shown: &Path) -> SysResult<LoopDev> {
        self.record(Call::AttachLoop(shown.to_owned()), shown, "LOOP_CONFIGURE")?;
        Ok(LoopDev {
            path: "/dev/loop7".into(),
            _fd: None,
        })
    }

    fn open_private_dir(&self, path: &Path, _mode: u32) -> SysResult<Handle> {
        self.record(Call::OpenPrivateDir(path.to_owned()), path, "open")?;
        Ok(Self::handle(path.to_owned()))
    }

    fn create_sparse_file(&self, dir: &Handle, name: &str, size: u64) -> SysResult<Handle> {
        let dir = dir.host_path();
        let path = dir.join(name);
        self.record(
            Call::CreateSparse {
                dir: dir.to_owned(),
                name: name.to_owned(),
                size,
            },
            &path,
            "create",
        )?;
        Ok(Self::handle(path))
    }

    fn lock_file(&self, dir: &Handle, name: &str, _wait: Duration) -> SysResult<Handle> {
        let path = dir.host_path().join(name);
        self.record(Call::LockFile(path.clone()), &path, "flock")?;
        Ok(Self::handle(path))
    }

    fn attach_loop_rw(&self, file: &Handle) -> SysResult<LoopDev> {
        let p = file.host_path();
        self.record(Call::AttachLoopRw(p.to_owned()), p, "LOOP_CONFIGURE")?;
        Ok(LoopDev {
            path: "/dev/loop8".into(),
            _fd: None,
        })
    }

    fn unlink_at(&self, dir: &Handle, name: &str) -> SysResult<()> {
        let path = dir.host_path().join(name);
        self.record(Call::Unlink(path.clone()), &path, "unlink")
    }

    fn spawn_daemon(
        &self,
        prepare: &dyn Fn() -> bool,
        program: &std::ffi::CStr,
        argv: &[std::ffi::CString],
        _env: &[std::ffi::CString],
    ) -> SysResult<nix::unistd::Pid> {
        let mut all = vec![program.to_string_lossy().into_owned()];
        all.extend(argv.iter().map(|a| a.to_string_lossy().into_owned()));
        self.record(Call::SpawnDaemon(all), Path::new(""), "fork")?;
        // The child's side, in-process: what it does is recorded after.
        prepare();
        Ok(nix::unistd::Pid::from_raw(4242))
    }

    fn run_tool(&self, argv: &[&OsStr], _timeout: Duration) -> SysResult<ToolOutput> {
        let shown = Path::new(argv.first().copied().unwrap_or_default());
        self.record(
            Call::RunTool(
                argv.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
            ),
            shown,
            "exec",
        )?;
        Ok(self.tool_output.borrow().clone())
    }

    fn chown_dir(&self, target: &Handle, uid: u32, gid: u32, mode: u32) -> SysResult<()> {
        self.record(
            Call::ChownDir {
                path: target.path().to_owned(),
                uid,
                gid,
                mode,
            },
            target.path(),
            "chown",
        )
    }

    fn mkdir_all(&self, path: &Path, _mode: u32) -> SysResult<()> {
        self.record(Call::MkdirAll(path.to_owned()), path, "mkdir")
    }

    fn resolve_in_root(
        &self,
        root: &Path,
        path: &Path,
        create: Option<Create>,
    ) -> SysResult<Handle> {
        self.resolve(root, path, create, false)
    }

    fn resolve_on_root_mount(
        &self,
        root: &Path,
        path: &Path,
        create: Option<Create>,
    ) -> SysResult<Handle> {
        self.resolve(root, path, create, true)
    }

    fn open_beneath(&self, dir: &Handle, rel: &Path, create: Option<Create>) -> SysResult<Handle> {
        let full = dir.path().join(rel);
        self.record(
            Call::OpenBeneath {
                dir: dir.path().to_owned(),
                rel: rel.to_owned(),
                create,
            },
            &full,
            "openat2",
        )?;
        Ok(Self::handle(full))
    }

    fn symlink_at(&self, dir: &Handle, name: &str, target: &Path) -> SysResult<()> {
        let full = dir.path().join(name);
        self.record(
            Call::Symlink {
                path: full.clone(),
                target: target.to_owned(),
            },
            &full,
            "symlink",
        )
    }

    fn write_at(
        &self,
        dir: &Handle,
        name: &str,
        contents: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> SysResult<()> {
        let full = dir.path().join(name);
        self.record(
            Call::WriteAt {
                path: full.clone(),
                contents: String::from_utf8_lossy(contents).into_owned(),
                mode,
                owner,
            },
            &full,
            "create",
        )
    }

    fn write_in_root(&self, root: &Path, path: &Path, contents: &[u8], mode: u32) -> SysResult<()> {
        let full = root.join(path.strip_prefix("/").unwrap_or(path));
        self.record(
            Call::Write {
                path: full.clone(),
                contents: String::from_utf8_lossy(contents).into_owned(),
                mode,
            },
            &full,
            "write",
        )
    }

    fn symlink_in_root(&self, root: &Path, path: &Path, target: &Path) -> SysResult<()> {
        let full = root.join(path.strip_prefix("/").unwrap_or(path));
        self.record(
            Call::Symlink {
                path: full.clone(),
                target: target.to_owned(),
            },
            &full,
            "symlink",
        )
    }

    fn open_as_user(&self, path: &Path, creds: &Creds) -> SysResult<(Handle, NodeKind)> {
        self.record(
            Call::OpenAsUser {
                path: path.to_owned(),
                uid: creds.uid,
            },
            path,
            "open as user",
        )?;
        let kind = self
            .kinds
            .borrow()
            .get(path)
            .copied()
            .unwrap_or(NodeKind::Dir);
        Ok((
            Self::handle(PathBuf::from(format!("user-fd:{}", path.display()))),
            kind,
        ))
    }

    fn open_host(&self, path: &Path) -> SysResult<(Handle, NodeKind)> {
        self.record(Call::OpenHost(path.to_owned()), path, "open")?;
        let kind = self
            .kinds
            .borrow()
            .get(path)
            .copied()
            .unwrap_or(NodeKind::Dir);
        Ok((
            Self::handle(PathBuf::from(format!("host-fd:{}", path.display()))),
            kind,
        ))
    }

    fn chroot(&self, path: &Path) -> SysResult<()> {
        self.record(Call::Chroot(path.to_owned()), path, "chroot")
    }

    fn chdir(&self, path: &Path) -> SysResult<()> {
        self.record(Call::Chdir(path.to_owned()), path, "chdir")
    }

    fn drop_bounding_set(&self) -> SysResult<()> {
        self.record(Call::DropBoundingSet, Path::new(""), "prctl")?;
        self.state.borrow_mut().1.bounding = 0;
        Ok(())
    }

    fn clear_inheritable_and_ambient(&self) -> SysResult<()> {
        self.record(Call::ClearInheritableAndAmbient, Path::new(""), "prctl")?;
        let mut st = self.state.borrow_mut();
        st.1.inheritable = 0;
        st.1.ambient = 0;
        Ok(())
    }

    fn set_no_new_privs(&self) -> SysResult<()> {
        self.record(Call::SetNoNewPrivs, Path::new(""), "prctl")?;
        self.state.borrow_mut().2 = true;
        Ok(())
    }

    fn setgroups(&self, groups: &[u32]) -> SysResult<()> {
        self.record(Call::Setgroups(groups.to_vec()), Path::new(""), "setgroups")?;
        self.state.borrow_mut().0.groups = groups.to_vec();
        Ok(())
    }

    fn setresgid(&self, gid: u32) -> SysResult<()> {
        self.record(Call::Setresgid(gid), Path::new(""), "setresgid")?;
        let mut st = self.state.borrow_mut();
        (st.0.rgid, st.0.egid, st.0.sgid) = (gid, gid, gid);
        Ok(())
    }

    fn setresuid(&self, uid: u32) -> SysResult<()> {
        self.record(Call::Setresuid(uid), Path::new(""), "setresuid")?;
        let mut st = self.state.borrow_mut();
        let saved = if self.broken_setresuid.get() { 0 } else { uid };
        (st.0.ruid, st.0.euid, st.0.suid) = (uid, uid, saved);
        // As the kernel does when all uids leave 0 (capabilities(7)).
        if uid != 0 && saved != 0 {
            st.1.permitted = 0;
            st.1.effective = 0;
            st.1.ambient = 0;
        }
        Ok(())
    }

    fn read_ids(&self) -> SysResult<Ids> {
        Ok(self.state.borrow().0.clone())
    }

    fn read_caps(&self) -> SysResult<CapSets> {
        Ok(self.state.borrow().1)
    }

    fn no_new_privs(&self) -> SysResult<bool> {
        Ok(self.state.borrow().2)
    }
}
