//! The assembly's call sequence on the recording fake.

use super::*;
use crate::sys::fake::{Call, FakeSys};
use crate::sys::{Create, MntFlags};
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
    let c = cfg(
        "[modules.gpu]\nmounts = [{ source = \"/opt/nv\", destination = \"/opt/shifter/gpu\" }]\n",
    );
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
    let c = cfg(
        "[modules.gpu]\nldconfig_dirs = [\"/opt/nv/lib\", \"/opt/nv/lib64\"]\n[modules.plain]\n",
    );
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
            Call::MoveMount { mount, target } if mount.to_string_lossy().starts_with("tree:") => {
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
fn per_node_cache_is_formatted_mounted_nosuid_nodev_and_given_to_the_user_before_it_is_attached() {
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
    let err = prepare_cache(&sys, "/var/cache/shifter:/cache:perNodeCache=size=8G").unwrap_err();
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
