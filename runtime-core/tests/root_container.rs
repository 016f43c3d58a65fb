//! Root tier: real loop devices, mounts and privilege drops, each test in a
//! forked child so nothing leaks into the test harness. Every invariant of
//! design §6 that the runtime owns is attacked here as a non-root user.
//!
//! Needs root, `mksquashfs`, `gcc -static`, `setcap` and a non-root user
//! (`shiftertest`, or uid 65534 when absent). Skips loudly otherwise.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use runtime_core::sys::real::{run_in_child, spawn_child, RealSys};
use runtime_core::{check_image, drop_to_user, enter, prepare, Config, Request, UserInfo, Volume};
use shifter_api::{ImageId, ImageMeta};

const CAPCHECK_SRC: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    uid_t r, e, s; gid_t gr, ge, gs;
    getresuid(&r, &e, &s); getresgid(&gr, &ge, &gs);
    printf("uid=%u euid=%u suid=%u gid=%u egid=%u sgid=%u\n", r, e, s, gr, ge, gs);
    FILE *f = fopen("/proc/self/status", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10)) fputs(line, stdout);
    printf("setuid0=%s\n", setuid(0) == 0 ? "ok" : strerror(errno));
    return 0;
}
"#;

/// A built test image, shared by all tests of this file (read-only).
struct ImageFiles {
    _dir: tempfile::TempDir,
    squashfs: PathBuf,
    /// `getcap` of capcheck-xattr as extracted back from the squashfs.
    xattr_caps: String,
}

fn skip(name: &str, why: &str) -> bool {
    test_skip::skip(name, why);
    true
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Returns why the root tier cannot run here, if it cannot.
fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    for t in ["mksquashfs", "gcc", "setcap", "busybox"] {
        if !have(t) {
            return Some(format!("{t} is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    None
}

fn test_user() -> UserInfo {
    UserInfo::lookup_by_name("shiftertest").unwrap_or_else(|| {
        eprintln!("note: user shiftertest is absent; using uid 65534 without a passwd entry");
        UserInfo::from_ids("nobody", 65534, 65534, &[], "/")
    })
}

trait LookupByName {
    fn lookup_by_name(name: &str) -> Option<UserInfo>;
}

impl LookupByName for UserInfo {
    fn lookup_by_name(name: &str) -> Option<UserInfo> {
        let u = nix::unistd::User::from_name(name).ok().flatten()?;
        UserInfo::lookup(u.uid.as_raw()).ok()
    }
}

fn sh(cmd: &str) {
    let st = Command::new("sh").args(["-ec", cmd]).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// Builds the test squashfs once: static busybox, capcheck plain, setuid-root
/// and with a `security.capability` xattr, a symlink to `/`, a symlink to
/// `/etc`, and a world-writable /scratch.
fn image_files() -> &'static ImageFiles {
    static IMG: OnceLock<ImageFiles> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        for d in ["bin", "usr/local/bin", "etc", "scratch", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(tree.join(d)).unwrap();
        }
        std::fs::set_permissions(tree.join("scratch"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let busybox = String::from_utf8(Command::new("sh").args(["-c", "command -v busybox"]).output().unwrap().stdout).unwrap();
        std::fs::copy(busybox.trim(), tree.join("bin/busybox")).unwrap();
        for a in ["sh", "cat", "ls", "touch", "echo", "true", "id", "sleep"] {
            std::os::unix::fs::symlink("busybox", tree.join("bin").join(a)).unwrap();
        }
        let src = dir.path().join("capcheck.c");
        std::fs::write(&src, CAPCHECK_SRC).unwrap();
        let bin = tree.join("usr/local/bin");
        sh(&format!(
            "gcc -static -O1 -o {b}/capcheck {s}; cp {b}/capcheck {b}/capcheck-suid; chmod 4755 {b}/capcheck-suid; \
             cp {b}/capcheck {b}/capcheck-xattr; setcap cap_setuid,cap_sys_admin+ep {b}/capcheck-xattr",
            b = bin.display(),
            s = src.display()
        ));
        std::fs::write(tree.join("etc/os-release"), "ID=root-tier\n").unwrap();
        std::os::unix::fs::symlink("/", tree.join("escape")).unwrap();
        std::os::unix::fs::symlink("/etc", tree.join("etc-link")).unwrap();
        let squashfs = dir.path().join("image.sqfs");
        sh(&format!(
            "mksquashfs {} {} -noappend -xattrs -quiet >/dev/null",
            tree.display(),
            squashfs.display()
        ));
        let back = dir.path().join("back");
        sh(&format!(
            "unsquashfs -q -n -d {} {} usr/local/bin/capcheck-xattr >/dev/null",
            back.display(),
            squashfs.display()
        ));
        let caps = Command::new("getcap").arg(back.join("usr/local/bin/capcheck-xattr")).output().unwrap();
        ImageFiles {
            _dir: dir,
            squashfs,
            xattr_caps: String::from_utf8_lossy(&caps.stdout).into_owned(),
        }
    })
}

/// A private image store and config for one test.
struct Store {
    dir: tempfile::TempDir,
    cfg: Config,
    id: ImageId,
}

fn store() -> Store {
    store_with(|_| {})
}

fn store_with(edit: impl FnOnce(&Path)) -> Store {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = ImageId::parse(&format!("{:064x}", rand_u64())).unwrap();
    let sq = images.join(id.squashfs_name());
    std::fs::copy(&image_files().squashfs, &sq).unwrap();
    let meta = ImageMeta {
        id: id.to_string(),
        format: "squashfs".into(),
        itype: "custom".into(),
        env: vec!["PATH=/usr/local/bin:/bin".into()],
        ..Default::default()
    };
    std::fs::write(images.join(id.meta_name()), meta.to_json()).unwrap();
    for f in [id.squashfs_name(), id.meta_name()] {
        std::fs::set_permissions(images.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    edit(&images);
    let text = format!(
        "system = \"t\"\nimage_dir = \"{}\"\nmount_root = \"{}\"\nupper_size = \"16m\"\n",
        images.display(),
        dir.path().join("mnt").display()
    );
    let cfg = Config::parse(&text, &dir.path().join("shifter.toml")).unwrap();
    Store { dir, cfg, id }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    u64::from_le_bytes(b)
}

/// Runs `body` in a forked child inside a container of `store` for the test
/// user, with `volumes`; returns what the child reported (or the setup error).
fn in_container(
    s: &Store,
    volumes: &[&str],
    body: impl FnOnce() -> String,
) -> Result<String, String> {
    let user = test_user();
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let code = run_in_child(|| {
        let out = (|| -> Result<String, String> {
            let img = check_image(&s.cfg, &s.id, &user).map_err(|e| e.to_string())?;
            let vols = Volume::parse_all(volumes).map_err(|e| e.to_string())?;
            let root = prepare(
                &RealSys,
                &s.cfg,
                &img,
                &user,
                &Request {
                    volumes: &vols,
                    modules: &[],
                    sshd: None,
                },
            )
            .map_err(|e| e.to_string())?;
            enter(&RealSys, &root).map_err(|e| e.to_string())?;
            drop_to_user(&RealSys, &user).map_err(|e| e.to_string())?;
            Ok(body())
        })();
        let (tag, text) = match out {
            Ok(t) => ("OK\n", t),
            Err(e) => ("ERR\n", e),
        };
        let _ = nix::unistd::write(&w, tag.as_bytes());
        let _ = nix::unistd::write(&w, text.as_bytes());
        0
    })
    .unwrap();
    drop(w);
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    assert_eq!(code, 0, "child died: {out}");
    match out.split_once('\n') {
        Some(("OK", rest)) => Ok(rest.to_owned()),
        Some(("ERR", rest)) => Err(rest.to_owned()),
        _ => panic!("child reported nothing: {out:?}"),
    }
}

/// Runs a program inside the container (already entered) with a clean env.
fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", "/usr/local/bin:/bin")
        .output();
    match out {
        Ok(o) => format!(
            "{}{}exit={}\n",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            o.status.code().unwrap_or(-1)
        ),
        Err(e) => format!("spawn failed: {e}\n"),
    }
}

fn status_fields(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn assert_unprivileged(out: &str, uid: u32) {
    let ids = format!("uid={uid} euid={uid} suid={uid}");
    assert!(out.contains(&ids), "ids not the user's: {out}");
    let f = status_fields(out);
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            f.get(k).map(String::as_str),
            Some("0000000000000000"),
            "{k} in {out}"
        );
    }
    assert_eq!(f.get("NoNewPrivs").map(String::as_str), Some("1"), "{out}");
    assert!(!out.contains("setuid0=ok"), "setuid(0) worked: {out}");
}

macro_rules! root_tier {
    ($name:literal) => {
        if let Some(why) = unavailable() {
            skip($name, &why);
            return;
        }
    };
}

#[test]
fn capabilities_are_empty_and_no_new_privs_is_set_for_the_user() {
    root_tier!("capabilities_are_empty_and_no_new_privs_is_set_for_the_user");
    let s = store();
    let out = in_container(&s, &[], || run(&["/usr/local/bin/capcheck"])).unwrap();
    assert_unprivileged(&out, test_user().uid);
}

#[test]
fn setuid_root_binary_in_the_image_gives_nothing() {
    root_tier!("setuid_root_binary_in_the_image_gives_nothing");
    let s = store();
    let out = in_container(&s, &[], || {
        let mode =
            std::fs::metadata("/usr/local/bin/capcheck-suid").map(|m| m.permissions().mode());
        format!(
            "mode={:o}\n{}",
            mode.unwrap_or(0),
            run(&["/usr/local/bin/capcheck-suid"])
        )
    })
    .unwrap();
    assert!(
        out.starts_with("mode=104755"),
        "the image really carries a setuid-root binary: {out}"
    );
    assert_unprivileged(&out, test_user().uid);
}

#[test]
fn file_capability_xattr_in_the_image_gives_nothing() {
    root_tier!("file_capability_xattr_in_the_image_gives_nothing");
    let s = store();
    assert!(
        image_files().xattr_caps.contains("cap_setuid"),
        "the image really carries a file capability: {}",
        image_files().xattr_caps
    );
    let out = in_container(&s, &[], || run(&["/usr/local/bin/capcheck-xattr"])).unwrap();
    assert_unprivileged(&out, test_user().uid);
}

#[test]
fn every_mount_in_the_container_is_nosuid_and_nodev_except_device_nodes() {
    root_tier!("every_mount_in_the_container_is_nosuid_and_nodev_except_device_nodes");
    let s = store();
    let vol = tempfile::tempdir().unwrap();
    std::fs::set_permissions(vol.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = format!("{}:/data", vol.path().display());
    let out = in_container(&s, &[&spec], || {
        std::fs::read_to_string("/proc/self/mountinfo").unwrap()
    })
    .unwrap();
    let device_nodes = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
        "/dev/pts",
    ];
    let mut seen = 0;
    for line in out.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (mountpoint, opts) = (fields[4], fields[5]);
        let opts: Vec<&str> = opts.split(',').collect();
        assert!(
            opts.contains(&"nosuid"),
            "{mountpoint} lacks nosuid: {line}"
        );
        if !device_nodes.contains(&mountpoint) {
            assert!(opts.contains(&"nodev"), "{mountpoint} lacks nodev: {line}");
        }
        seen += 1;
    }
    assert!(out.contains(" /data "), "the volume is listed: {out}");
    assert!(seen >= 10, "expected the whole container's mounts: {out}");
}

#[test]
fn image_stays_read_only_while_the_writable_layer_takes_writes() {
    root_tier!("image_stays_read_only_while_the_writable_layer_takes_writes");
    let s = store();
    let sq = s.cfg.image_dir.join(s.id.squashfs_name());
    let before = std::fs::read(&sq).unwrap();
    let lower = s.cfg.mount_root.join("lower");
    let user = test_user();
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let code = run_in_child(|| {
        let img = check_image(&s.cfg, &s.id, &user).unwrap();
        let root = prepare(&RealSys, &s.cfg, &img, &user, &Request::default()).unwrap();
        // Before entering: how the squashfs itself is mounted.
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let lower_line = mi
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(lower.to_str().unwrap()))
            .unwrap_or("")
            .to_owned();
        enter(&RealSys, &root).unwrap();
        drop_to_user(&RealSys, &user).unwrap();
        let wrote = std::fs::write("/scratch/new-file", "x").is_ok();
        let report = format!("{lower_line}\nwrote={wrote}\n");
        let _ = nix::unistd::write(&w, report.as_bytes());
        0
    })
    .unwrap();
    drop(w);
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    assert_eq!(code, 0, "{out}");
    let lower_line = out.lines().next().unwrap();
    let mount_opts: Vec<&str> = lower_line
        .split(' ')
        .nth(5)
        .unwrap_or("")
        .split(',')
        .collect();
    assert!(lower_line.contains("squashfs"), "{out}");
    assert!(
        mount_opts.contains(&"ro"),
        "squashfs mounted read-only: {lower_line}"
    );
    assert!(
        out.contains("wrote=true"),
        "the overlay takes writes: {out}"
    );
    assert_eq!(
        std::fs::read(&sq).unwrap(),
        before,
        "the image file is unchanged"
    );
}

#[test]
fn volume_of_a_directory_the_user_cannot_read_is_refused() {
    root_tier!("volume_of_a_directory_the_user_cannot_read_is_refused");
    let s = store();
    let secret = tempfile::tempdir().unwrap();
    std::fs::set_permissions(secret.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let spec = format!("{}:/data", secret.path().display());
    let err = in_container(&s, &[&spec], || "entered".into()).unwrap_err();
    assert!(err.contains("cannot read your volume source"), "{err}");
    assert!(err.contains("EACCES"), "{err}");
    if Path::new("/root").exists()
        && std::fs::metadata("/root").unwrap().permissions().mode() & 0o005 == 0
    {
        let err = in_container(&s, &["/root:/data"], || "entered".into()).unwrap_err();
        assert!(err.contains("/root"), "{err}");
    }
}

#[test]
fn volume_onto_etc_is_refused() {
    root_tier!("volume_onto_etc_is_refused");
    let s = store();
    let err = in_container(&s, &["/tmp:/etc"], || "entered".into()).unwrap_err();
    assert!(err.contains("/etc is generated by the runtime"), "{err}");
}

#[test]
fn image_symlink_to_etc_cannot_smuggle_a_volume_onto_etc() {
    root_tier!("image_symlink_to_etc_cannot_smuggle_a_volume_onto_etc");
    let s = store();
    let err = in_container(&s, &["/tmp:/etc-link"], || "entered".into()).unwrap_err();
    assert!(err.contains("forbidden"), "{err}");
}

#[test]
fn image_symlink_to_slash_used_as_destination_stays_inside_the_root() {
    root_tier!("image_symlink_to_slash_used_as_destination_stays_inside_the_root");
    let s = store();
    let vol = tempfile::tempdir().unwrap();
    std::fs::set_permissions(vol.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(vol.path().join("marker"), "from-host\n").unwrap();
    std::fs::set_permissions(
        vol.path().join("marker"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    // If the symlink were followed on the host, the bind would land on /shifter-escape-test.
    let host_target = Path::new("/shifter-escape-test");
    assert!(
        !host_target.exists(),
        "leftover {host_target:?} from an earlier run"
    );
    let spec = format!("{}:/escape/shifter-escape-test", vol.path().display());
    let out = in_container(&s, &[&spec], || {
        std::fs::read_to_string("/shifter-escape-test/marker")
            .unwrap_or_else(|e| format!("unreadable: {e}"))
    })
    .unwrap();
    assert_eq!(out, "from-host\n");
    assert!(
        !host_target.exists(),
        "the volume escaped the container root"
    );
}

#[test]
fn missing_volume_destination_is_never_created_on_a_host_mount() {
    root_tier!("missing_volume_destination_is_never_created_on_a_host_mount");
    let mut s = store();
    let site = tempfile::tempdir().unwrap();
    std::fs::set_permissions(site.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(site.path().join("exists")).unwrap();
    s.cfg.site_fs.push(runtime_core::SiteMount {
        source: site.path().to_owned(),
        destination: Some("/site".into()),
        read_only: false,
        recursive: false,
    });
    let vol = tempfile::tempdir().unwrap();
    std::fs::set_permissions(vol.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let spec = format!("{}:/site/created-by-root", vol.path().display());
    let err = in_container(&s, &[&spec], || "entered".into()).unwrap_err();
    assert!(err.contains("create it there yourself first"), "{err}");
    assert!(
        !site.path().join("created-by-root").exists(),
        "root created a directory on the host"
    );
    // An existing directory inside the site mount is a fine destination.
    let spec = format!("{}:/site/exists", vol.path().display());
    let out = in_container(&s, &[&spec], || "entered".into()).unwrap();
    assert_eq!(out, "entered");
}

#[test]
fn failed_setup_unmounts_everything_and_frees_the_loop_device() {
    root_tier!("failed_setup_unmounts_everything_and_frees_the_loop_device");
    let mut s = store();
    // Fails late: after the image, overlay, /proc, /sys, /dev and /tmp are mounted.
    s.cfg.site_fs.push(runtime_core::SiteMount {
        source: "/nonexistent/site/path".into(),
        destination: None,
        read_only: false,
        recursive: false,
    });
    let user = test_user();
    let mount_root = s.cfg.mount_root.to_str().unwrap().to_owned();
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let code = run_in_child(|| {
        let img = check_image(&s.cfg, &s.id, &user).unwrap();
        let err = prepare(&RealSys, &s.cfg, &img, &user, &Request::default()).unwrap_err();
        // Still in the namespace prepare made: nothing of ours may remain mounted.
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<&str> = mi.lines().filter(|l| l.contains(&mount_root)).collect();
        // And the loop device is released by the rollback itself, not only
        // when the namespace dies.
        let start = Instant::now();
        while !loop_devices_backed_by(&s.cfg.image_dir).is_empty()
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let loops = loop_devices_backed_by(&s.cfg.image_dir).len();
        let report = format!(
            "{err}\nleft={} loops={loops}\n{}",
            left.len(),
            left.join("\n")
        );
        let _ = nix::unistd::write(&w, report.as_bytes());
        0
    })
    .unwrap();
    drop(w);
    let mut out = String::new();
    std::fs::File::from(r).read_to_string(&mut out).unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("/nonexistent/site/path"),
        "the error names the path: {out}"
    );
    assert!(
        out.contains("left=0"),
        "mounts remain after rollback: {out}"
    );
    assert_no_loop_device_for(&s.cfg.image_dir, Duration::from_secs(5));
}

#[test]
fn concurrent_setups_each_get_their_own_loop_device() {
    root_tier!("concurrent_setups_each_get_their_own_loop_device");
    use runtime_core::sys::Sys;
    let s = store();
    let image = s.cfg.image_dir.join(s.id.squashfs_name());
    // Several processes racing for LOOP_CTL_GET_FREE get the same number; the
    // losers must retry instead of failing (testbed §7).
    let children: Vec<_> = (0..6)
        .map(|_| {
            spawn_child(|| {
                match std::fs::File::open(&image)
                    .map_err(|e| e.to_string())
                    .and_then(|f| RealSys.attach_loop(&f, &image).map_err(|e| e.to_string()))
                {
                    Ok(dev) => {
                        std::thread::sleep(Duration::from_millis(300));
                        drop(dev);
                        0
                    }
                    Err(e) => {
                        eprintln!("attach failed: {e}");
                        1
                    }
                }
            })
            .unwrap()
        })
        .collect();
    for c in children {
        assert_eq!(
            runtime_core::sys::real::wait_for(c).unwrap(),
            0,
            "a concurrent attach failed"
        );
    }
    assert_no_loop_device_for(&s.cfg.image_dir, Duration::from_secs(5));
}

#[test]
fn group_writable_image_file_is_refused() {
    root_tier!("group_writable_image_file_is_refused");
    let s = store_with(|images| {
        for e in std::fs::read_dir(images).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "squashfs") {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
            }
        }
    });
    let err = in_container(&s, &[], || "entered".into()).unwrap_err();
    assert!(err.contains("writable by group or others"), "{err}");
}

#[test]
fn group_writable_image_directory_is_refused() {
    root_tier!("group_writable_image_directory_is_refused");
    let s = store_with(|images| {
        std::fs::set_permissions(images, std::fs::Permissions::from_mode(0o775)).unwrap();
    });
    let err = in_container(&s, &[], || "entered".into()).unwrap_err();
    assert!(err.contains("writable by group or others"), "{err}");
}

#[test]
fn random_bytes_as_squashfs_give_a_clear_error() {
    root_tier!("random_bytes_as_squashfs_give_a_clear_error");
    let junk = |with_magic: bool| {
        move |images: &Path| {
            for e in std::fs::read_dir(images).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "squashfs") {
                    let mut bytes = vec![0u8; 256 * 1024];
                    std::fs::File::open("/dev/urandom")
                        .unwrap()
                        .read_exact(&mut bytes)
                        .unwrap();
                    if with_magic {
                        bytes[..4].copy_from_slice(b"hsqs");
                    }
                    std::fs::write(&p, bytes).unwrap();
                }
            }
        }
    };
    let s = store_with(junk(false));
    let err = in_container(&s, &[], || "entered".into()).unwrap_err();
    assert!(err.contains("not a squashfs image"), "{err}");
    // Random bytes behind a valid magic get past the cheap check and must be
    // refused by the kernel's squashfs parser, with the same kind of message.
    let s = store_with(junk(true));
    let err = in_container(&s, &[], || "entered".into()).unwrap_err();
    assert!(err.contains("not a valid squashfs image"), "{err}");
    assert_no_loop_device_for(&s.cfg.image_dir, Duration::from_secs(5));
}

fn loop_devices_backed_by(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let bf = e.path().join("loop/backing_file");
        if let Ok(b) = std::fs::read_to_string(&bf) {
            if Path::new(b.trim()).starts_with(dir) {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn assert_no_loop_device_for(dir: &Path, within: Duration) {
    let start = Instant::now();
    loop {
        let left = loop_devices_backed_by(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < within,
            "loop devices still attached to {}: {left:?}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_leaves_no_mount_and_no_loop_device() {
    root_tier!("sigkill_leaves_no_mount_and_no_loop_device");
    let s = store();
    let user = test_user();
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    // The child prepares a container, reports its loop device and blocks
    // until it is killed.
    let child = spawn_child(|| {
        let img = check_image(&s.cfg, &s.id, &user).unwrap();
        let root = prepare(&RealSys, &s.cfg, &img, &user, &Request::default()).unwrap();
        let _ = nix::unistd::write(&w, format!("{}\n", root.loop_device.display()).as_bytes());
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    })
    .unwrap();
    drop(w);
    let mut line = String::new();
    let mut rf = std::fs::File::from(r);
    let mut buf = [0u8; 256];
    let n = rf.read(&mut buf).unwrap();
    line.push_str(&String::from_utf8_lossy(&buf[..n]));
    let dev = line.trim().to_owned();
    assert!(
        dev.starts_with("/dev/loop"),
        "child did not prepare: {line:?}"
    );
    let name = dev.trim_start_matches("/dev/");
    let backing = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).unwrap();
    assert!(
        Path::new(backing.trim()).starts_with(&s.cfg.image_dir),
        "attached while running: {backing}"
    );
    let host_mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mi.contains(s.dir.path().to_str().unwrap()),
        "mounts leaked to the host namespace"
    );

    nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL).unwrap();
    nix::sys::wait::waitpid(child, None).unwrap();
    assert_no_loop_device_for(&s.cfg.image_dir, Duration::from_secs(5));
    let host_mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mi.contains(s.dir.path().to_str().unwrap()),
        "a mount remains: {host_mi}"
    );
}
