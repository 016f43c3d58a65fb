//! End-to-end attacks on the privileged parts (the setuid `shifter` and the
//! plugin's root side in slurmstepd), made the way the unprivileged test user
//! can make them on the local cluster: swapping names inside a directory the
//! user owns while root works on it, images whose system directories are
//! symlinks onto the user's volumes or onto host directories a module binds,
//! and signals to the setuid process. Each test snapshots root-owned sentinel
//! files and directories on the host (owner, mode, content) before the attack
//! and checks that nothing of them changed afterwards.
//!
//! `shifter` runs setuid as the user (`setpriv` to the user's ids, then the
//! cluster's setuid-root copy) inside node n1's mount namespace, where
//! `/etc/shifter/shifter.toml` is the cluster's config (up.sh). Steps done on
//! the user's behalf (renames inside the user's own directory, freezing the
//! process with SIGSTOP) are done by this root test process: the user can do
//! all of them today, and doing them as root keeps the attack working against
//! a runtime that no longer lets the user signal it, so only a fix of the race
//! itself passes. The signal test itself (`user_cannot_stop_...`) sends its
//! signals as the user.
//!
//! The images come from `integration/images/attacks.py` (pushed by build.sh
//! as `attack/<name>:latest`, listed in `SHIFTER_ATTACK_IMAGES`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{renameat2, RenameFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shifter_integration::slurm::serial;
use shifter_integration::{gid_of, uid_of, Run, Testbed};

const T: Duration = Duration::from_secs(120);
/// The node `shifter` runs on (its mount namespace), and the one whose spool
/// dir the `opt-shifter-link` image points at (attacks.py, build.sh).
const NODE: &str = "n1";
/// The smallest cache mkfs.xfs makes.
const CACHE_SIZE: &str = "300M";

fn required() -> bool {
    std::env::var("SHIFTER_E2E_REQUIRED").as_deref() == Ok("1")
}

/// The busybox image, pulled; None after a loud skip notice (a failure when
/// the end-to-end tier is required).
fn busybox(tb: &Testbed) -> Option<String> {
    tb.gateway()?;
    Some(tb.pulled("busybox:latest"))
}

/// One of the images of attacks.py, pulled.
fn attack_image(tb: &Testbed, name: &str) -> Option<String> {
    tb.gateway()?;
    let want = format!("attack/{name}:latest");
    let listed = tb
        .var_opt("SHIFTER_ATTACK_IMAGES")
        .is_some_and(|l| l.split_whitespace().any(|i| i == want));
    if !listed {
        let why = format!("{want} is not in SHIFTER_ATTACK_IMAGES: the cluster was started by an older integration/images/build.sh");
        assert!(!required(), "{why}");
        eprintln!("\n!!!! SKIPPED attack test: {why}\n");
        return None;
    }
    Some(tb.pulled(&want))
}

fn setuid_bin(tb: &Testbed) -> String {
    tb.var_opt("SHIFTER_SETUID_BIN")
        .unwrap_or_else(|| {
            panic!("SHIFTER_SETUID_BIN missing from the cluster env: the runtime hook did not install shifter")
        })
        .to_owned()
}

fn slurmd_pid(tb: &Testbed, node: &str) -> String {
    let f = tb.dir.join("pids").join(format!("slurmd-{node}.pid"));
    std::fs::read_to_string(&f)
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        .trim()
        .to_owned()
}

fn cache_dir(tb: &Testbed) -> PathBuf {
    PathBuf::from(tb.var("SHIFTER_CACHE_DIR"))
}

fn srun(tb: &Testbed, args: &[&str]) -> Run {
    let mut all = vec!["srun"];
    all.extend_from_slice(args);
    tb.run_as(tb.user(), &all, T)
}

// ---- sentinels -------------------------------------------------------------

/// A scratch directory of one test, removed (whoever owns it by then) on drop.
struct Scratch(PathBuf);

impl Scratch {
    /// A root-owned 0755 directory under the state dir (the user can read it,
    /// not write it) holding `entries`: `(name, Some(text))` is a root-owned
    /// 0644 file, `(name, None)` a root-owned 0755 directory.
    fn root_owned(tb: &Testbed, name: &str, entries: &[(&str, Option<&str>)]) -> Scratch {
        let dir = tb.dir.join(format!("attack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (n, content) in entries {
            let p = dir.join(n);
            match content {
                Some(text) => {
                    std::fs::write(&p, text).unwrap();
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
                }
                None => {
                    std::fs::create_dir(&p).unwrap();
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
                }
            }
        }
        Scratch(dir)
    }

    /// A directory of the test user's in the shared work dir, with the
    /// user's subdirectories `subdirs` in it.
    fn user_owned(tb: &Testbed, name: &str, subdirs: &[&str]) -> Scratch {
        let dir = tb
            .workdir()
            .join(format!("attack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (uid, gid) = (uid_of(tb.user()), gid_of(tb.user()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        lchown(&dir, Some(uid), Some(gid)).unwrap();
        for s in subdirs {
            let p = dir.join(s);
            std::fs::create_dir(&p).unwrap();
            lchown(&p, Some(uid), Some(gid)).unwrap();
        }
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn show(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every entry under `dir` (itself included, symlinks not followed) with its
/// type, owner, mode and content or link target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(base: &Path, p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(m) = std::fs::symlink_metadata(p) else {
            return;
        };
        let ft = m.file_type();
        let mut what = format!("{}:{} mode {:o}", m.uid(), m.gid(), m.mode());
        if ft.is_symlink() {
            let target = std::fs::read_link(p).unwrap_or_default();
            what.push_str(&format!(" -> {}", target.display()));
        } else if ft.is_file() {
            let data = std::fs::read(p).unwrap_or_default();
            what.push_str(&format!(" {:?}", String::from_utf8_lossy(&data)));
        }
        out.insert(p.strip_prefix(base).unwrap().to_owned(), what);
        if ft.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            names.sort();
            for n in names {
                walk(base, &n, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// What differs between two snapshots, one line per entry.
fn diff(before: &BTreeMap<PathBuf, String>, after: &BTreeMap<PathBuf, String>) -> Vec<String> {
    let keys: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let name = if k.as_os_str().is_empty() {
                ".".to_owned()
            } else {
                k.display().to_string()
            };
            match (before.get(k), after.get(k)) {
                (Some(a), Some(b)) if a == b => None,
                (Some(a), Some(b)) => Some(format!("{name}: was {a}, now {b}")),
                (Some(a), None) => Some(format!("{name}: removed (was {a})")),
                (None, Some(b)) => Some(format!("{name}: created ({b})")),
                (None, None) => None,
            }
        })
        .collect()
}

/// Panics, naming every change, unless `dir` is as `before` recorded it.
#[track_caller]
fn assert_unchanged(
    dir: &Path,
    before: &BTreeMap<PathBuf, String>,
    context: &dyn std::fmt::Display,
) {
    let changes = diff(before, &snapshot(dir));
    assert!(
        changes.is_empty(),
        "the root-owned host directory {} was changed by the attack:\n  {}\n{context}",
        dir.display(),
        changes.join("\n  ")
    );
}

// ---- processes -------------------------------------------------------------

/// The field after the command name in `/proc/PID/stat` (R, S, T, Z, ...).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether a child of `pid`, or a child of one, ... is named `name`.
fn has_descendant_named(pid: u32, name: &str) -> bool {
    let mut todo = children(pid);
    while let Some(c) = todo.pop() {
        if comm(c).as_deref() == Some(name) {
            return true;
        }
        todo.extend(children(c));
    }
    false
}

/// SIGSTOP, then waits until the kernel reports the process stopped (kill
/// returns before a process running on another CPU has stopped). False when
/// it is gone.
fn freeze(pid: u32) -> bool {
    if kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).is_err() {
        return false;
    }
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match proc_state(pid) {
            Some('T') | Some('t') => return true,
            None | Some('Z') | Some('X') => return false,
            _ => std::thread::sleep(Duration::from_micros(200)),
        }
    }
    panic!("pid {pid} did not stop within 5s of SIGSTOP");
}

fn thaw(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
}

/// The setuid `shifter` started by the test user on node n1: `setpriv` takes
/// the user's ids (real and effective, with the user's groups) in the node's
/// mount namespace and execs the setuid-root copy, so the returned child's pid
/// is shifter's own. Output goes to files (read by [`finish`]).
fn spawn_shifter(tb: &Testbed, args: &[&str]) -> (Child, PathBuf) {
    let user = tb.user();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let out = tb.dir.join("out").join(format!(
        "attack-shifter-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let stdout = File::create(out.with_extension("out")).unwrap();
    let stderr = File::create(out.with_extension("err")).unwrap();
    let child = Command::new("nsenter")
        .args(["-t", &slurmd_pid(tb, NODE), "-m", "--"])
        .args(["setpriv", &format!("--reuid={}", uid_of(user))])
        .args([&format!("--regid={}", gid_of(user)), "--init-groups", "--"])
        .arg(setuid_bin(tb))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("USER", user)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("nsenter (util-linux)");
    (child, out)
}

/// Waits for the child (killing it after `timeout`) and returns its output.
fn finish(mut child: Child, out: &Path, started: Instant, timeout: Duration) -> Run {
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > timeout {
            thaw(child.id());
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |ext: &str| {
        let p = out.with_extension(ext);
        let s = std::fs::read_to_string(&p).unwrap_or_default();
        let _ = std::fs::remove_file(&p);
        s
    };
    Run {
        status: status.code(),
        stdout: read("out"),
        stderr: read("err"),
        elapsed: started.elapsed(),
    }
}

/// A refusal must be `shifter`'s own message, not a crash.
#[track_caller]
fn assert_clean_refusal(r: &Run) {
    assert!(
        r.stderr.contains("shifter: ") && !r.stderr.contains("panicked"),
        "shifter failed without saying why: {r}"
    );
}

// ---- mountinfo -------------------------------------------------------------

/// One line of a mountinfo file.
#[derive(Debug)]
struct MountLine {
    /// The directory of the mounted filesystem that is mounted (a bind's source).
    root: String,
    point: String,
    options: Vec<String>,
    fstype: String,
    line: String,
}

fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some(MountLine {
                root: f.get(3)?.to_string(),
                point: f.get(4)?.to_string(),
                options: f.get(5)?.split(',').map(str::to_owned).collect(),
                fstype: f.get(dash + 1)?.to_string(),
                line: l.to_owned(),
            })
        })
        .collect()
}

/// The mountinfo `root` field a bind of host directory `dir` shows on node
/// n1: the path of `dir` inside the filesystem that holds it.
fn bind_root_of(tb: &Testbed, dir: &Path) -> String {
    let node =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", slurmd_pid(tb, NODE))).unwrap();
    let holder = parse_mountinfo(&node)
        .into_iter()
        .filter(|m| dir.starts_with(&m.point))
        .max_by_key(|m| m.point.len())
        .expect("a mount holds every path");
    let rest = dir.strip_prefix(&holder.point).unwrap();
    let root = Path::new(&holder.root).join(rest);
    root.display().to_string()
}

/// Panics unless every mount in `mounts` whose root is `root` carries each of
/// `want`; returns how many there were.
#[track_caller]
fn assert_mount_flags(
    mounts: &[MountLine],
    root: &str,
    want: &[&str],
    what: &str,
    r: &Run,
) -> usize {
    let found: Vec<&MountLine> = mounts.iter().filter(|m| m.root == root).collect();
    for m in &found {
        for w in want {
            assert!(
                m.options.iter().any(|o| o == w),
                "{what} ({root}) is mounted at {} without {w}: {}\n{r}",
                m.point,
                m.line
            );
        }
    }
    found.len()
}

// ---- 1. per-node cache chown race through the setuid shifter -----------------

#[test]
fn cache_destination_swapped_for_a_symlink_during_mkfs_leaves_the_host_directory_root_owned() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(image) = busybox(&tb) else { return };
    let victim = Scratch::root_owned(&tb, "victim", &[("keep", Some("sentinel\n"))]);
    let before = snapshot(victim.path());
    let mut landed = 0;
    for round in 0..3 {
        let w = Scratch::user_owned(&tb, &format!("w{round}"), &["c"]);
        let volumes = format!(
            "--volume={}:/victim;{}:/w;{}:/w/c:perNodeCache=size={CACHE_SIZE}",
            victim.show(),
            w.show(),
            cache_dir(&tb).display()
        );
        let started = Instant::now();
        let (child, out) =
            spawn_shifter(&tb, &[&format!("--image={image}"), &volumes, "/bin/true"]);
        let pid = child.id();
        // The cache's destination /w/c has been resolved and checked once
        // mkfs.xfs runs; freeze shifter there and swap /w/c (in the user's
        // own directory) for a symlink to the root-owned /victim.
        let mut saw_mkfs = false;
        while started.elapsed() < Duration::from_secs(60)
            && proc_state(pid).is_some_and(|s| s != 'Z')
        {
            if has_descendant_named(pid, "mkfs.xfs") {
                saw_mkfs = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let mut swapped_in_time = false;
        if saw_mkfs && freeze(pid) {
            // Still waiting for mkfs.xfs (running or not yet reaped): shifter
            // has not mounted the cache yet, so the swap is in the window.
            swapped_in_time = has_descendant_named(pid, "mkfs.xfs");
            std::fs::rename(w.path().join("c"), w.path().join("c.moved")).unwrap();
            symlink("/victim", w.path().join("c")).unwrap();
            lchown(
                w.path().join("c"),
                Some(uid_of(tb.user())),
                Some(gid_of(tb.user())),
            )
            .unwrap();
            thaw(pid);
        }
        let r = finish(child, &out, started, T);
        let context =
            format!("round {round} (swapped while mkfs.xfs ran: {swapped_in_time}): shifter {r}");
        assert_unchanged(victim.path(), &before, &context);
        if !r.success() {
            assert_clean_refusal(&r);
        }
        if swapped_in_time {
            landed += 1;
        }
    }
    assert!(
        landed > 0,
        "shifter was never frozen while mkfs.xfs ran, so the swap was never in the window: this test proved nothing"
    );
    tb.assert_no_cache_left();
}

/// Exchanges the names `a` and `b` in `dir` atomically (renameat2
/// RENAME_EXCHANGE), the way a user flips a directory and a symlink.
fn exchange(dir: &Path, a: &str, b: &str) {
    renameat2(
        None,
        &dir.join(a),
        None,
        &dir.join(b),
        RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap_or_else(|e| {
        panic!(
            "renameat2({a}, {b}, RENAME_EXCHANGE) in {}: {e}",
            dir.display()
        )
    });
}

/// While `pid` is `shifter` (until it execs the command): flips `v`/`lv` and
/// `c`/`lc` in `w` as fast as it can, and at each mount that appears in its
/// mountinfo freezes it, flips once more and lets it go on (at most
/// `max_freezes` times). Returns how often it froze it.
fn flip_until_exec(pid: u32, w: &Path, started: Instant, max_freezes: usize) -> usize {
    let mut seen = 0usize;
    let mut freezes = 0usize;
    let mut was_shifter = false;
    while started.elapsed() < Duration::from_secs(90) {
        match comm(pid).as_deref() {
            Some("shifter") => was_shifter = true,
            Some(_) if was_shifter => break,
            None => break,
            // Still nsenter or setpriv.
            Some(_) => continue,
        }
        if proc_state(pid) == Some('Z') {
            break;
        }
        exchange(w, "v", "lv");
        exchange(w, "c", "lc");
        let n = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .map(|m| m.lines().count())
            .unwrap_or(0);
        if seen != 0 && n > seen && freezes < max_freezes && freeze(pid) {
            freezes += 1;
            exchange(w, "v", "lv");
            exchange(w, "c", "lc");
            thaw(pid);
        }
        seen = n;
    }
    freezes
}

#[test]
fn volumes_flipped_with_symlinks_at_every_new_mount_keep_their_flags_and_owners() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(image) = busybox(&tb) else { return };
    // The cache is flipped with a symlink to /victim (which it would chown),
    // the :ro volume with one to /victim2 (whose mount would get its flags).
    let victim = Scratch::root_owned(&tb, "flip-victim", &[("keep", Some("sentinel\n"))]);
    let victim2 = Scratch::root_owned(&tb, "flip-victim2", &[("keep", Some("sentinel\n"))]);
    let before = snapshot(victim.path());
    let before2 = snapshot(victim2.path());
    let src = Scratch::user_owned(&tb, "flip-src", &[]);
    std::fs::write(src.path().join("marker"), "the ro volume\n").unwrap();
    let src_root = bind_root_of(&tb, src.path());
    let victim_roots = [
        bind_root_of(&tb, victim.path()),
        bind_root_of(&tb, victim2.path()),
    ];
    // Round 0 is the baseline without an attack (the flags must be right
    // there too); then bounded attack rounds of about 0.2 s each (a 300M
    // xfs each). The vulnerable runtime showed damage within 1 to 13 rounds.
    const ROUNDS: usize = 30;
    const FREEZES_PER_ROUND: usize = 64;
    let mut freezes_total = 0;
    for round in 0..=ROUNDS {
        let attack = round > 0;
        let w = Scratch::user_owned(&tb, &format!("flip-w{round}"), &["v", "c"]);
        for (l, target) in [("lv", "/victim2"), ("lc", "/victim")] {
            symlink(target, w.path().join(l)).unwrap();
            lchown(
                w.path().join(l),
                Some(uid_of(tb.user())),
                Some(gid_of(tb.user())),
            )
            .unwrap();
        }
        let volumes = format!(
            "--volume={}:/victim;{}:/victim2;{}:/w;{}:/w/v:ro;{}:/w/c:perNodeCache=size={CACHE_SIZE}",
            victim.show(),
            victim2.show(),
            w.show(),
            src.show(),
            cache_dir(&tb).display()
        );
        let started = Instant::now();
        let (child, out) = spawn_shifter(
            &tb,
            &[
                &format!("--image={image}"),
                &volumes,
                "/bin/cat",
                "/proc/self/mountinfo",
            ],
        );
        let freezes = if attack {
            flip_until_exec(child.id(), w.path(), started, FREEZES_PER_ROUND)
        } else {
            0
        };
        freezes_total += freezes;
        let r = finish(child, &out, started, T);
        let label = if attack {
            format!("attack round {round} ({freezes} freezes)")
        } else {
            "baseline round (no attack)".to_owned()
        };
        eprintln!(
            "{label}: exit {:?}, {}",
            r.status,
            r.stderr.lines().last().unwrap_or("")
        );
        assert_unchanged(victim.path(), &before, &format!("{label}: shifter {r}"));
        assert_unchanged(victim2.path(), &before2, &format!("{label}: shifter {r}"));
        if !r.success() {
            assert!(attack, "{label}: shifter failed: {r}");
            assert_clean_refusal(&r);
            continue;
        }
        let mounts = parse_mountinfo(&r.stdout);
        assert!(!mounts.is_empty(), "{label}: no mountinfo printed: {r}");
        let n = assert_mount_flags(
            &mounts,
            &src_root,
            &["ro", "nosuid", "nodev"],
            &format!("{label}: the :ro volume"),
            &r,
        );
        assert!(
            n >= 1,
            "{label}: the :ro volume {src_root} is not mounted in the container: {r}"
        );
        for (root, name) in victim_roots.iter().zip(["/victim", "/victim2"]) {
            assert_mount_flags(
                &mounts,
                root,
                &["nosuid", "nodev"],
                &format!("{label}: the {name} volume"),
                &r,
            );
            // Asked for read-write: another volume's flags must not land on it.
            for m in mounts.iter().filter(|m| &m.root == root) {
                assert!(
                    m.options.iter().all(|o| o != "ro"),
                    "{label}: the {name} volume got another volume's ro: {}\n{r}",
                    m.line
                );
            }
        }
        assert_mount_flags(
            &mounts,
            &bind_root_of(&tb, w.path()),
            &["nosuid", "nodev"],
            &format!("{label}: the /w volume"),
            &r,
        );
        let caches: Vec<&MountLine> = mounts.iter().filter(|m| m.fstype == "xfs").collect();
        assert_eq!(caches.len(), 1, "{label}: one per-node cache: {r}");
        for want in ["nosuid", "nodev"] {
            assert!(
                caches[0].options.iter().any(|o| o == want),
                "{label}: the per-node cache is mounted at {} without {want}: {}\n{r}",
                caches[0].point,
                caches[0].line
            );
        }
    }
    assert!(freezes_total > 0, "shifter was never frozen at a new mount");
    tb.assert_no_cache_left();
}

// ---- 2. the plugin's sshd setup writing through image symlinks -------------

/// The cluster's sshd port, or None after a loud skip notice.
fn sshd_enabled(tb: &Testbed) -> Option<()> {
    if tb.var_opt("SHIFTER_SSHD_PORT").is_some() {
        return Some(());
    }
    assert!(
        !required(),
        "SHIFTER_SSHD_PORT missing from the cluster env: up.d/70-sshd.sh did not enable sshd (is openssh-server installed?)"
    );
    eprintln!(
        "\n!!!! SKIPPED sshd attack test: the cluster has no sshd (SHIFTER_SSHD_PORT unset)\n"
    );
    None
}

/// Runs `true` in `image` with the root-owned `sentinel` bound at /data, with
/// sshd enabled, and checks that the sentinel is exactly as before.
#[track_caller]
fn assert_sshd_setup_leaves_volume_alone(tb: &Testbed, image: &str, sentinel: &Scratch) {
    let before = snapshot(sentinel.path());
    let r = srun(
        tb,
        &[
            "-N1",
            "-w",
            NODE,
            &format!("--image={image}"),
            &format!("--volume={}:/data", sentinel.show()),
            // Not sh: the etc-link image has none.
            "/bin/busybox",
            "echo",
            "task-ran",
        ],
    );
    tb.assert_nothing_left();
    assert_unchanged(sentinel.path(), &before, &format!("srun {r}"));
    if r.success() {
        assert!(r.stdout.contains("task-ran"), "{r}");
    } else {
        assert!(
            r.stderr.contains("shifter"),
            "the step failed without saying why: {r}"
        );
    }
}

#[test]
fn sshd_setup_does_not_replace_ssh_config_through_an_image_etc_ssh_symlink_to_a_volume() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(()) = sshd_enabled(&tb) else { return };
    let Some(image) = attack_image(&tb, "etc-ssh-link") else {
        return;
    };
    let sentinel = Scratch::root_owned(
        &tb,
        "sshd-etc-ssh",
        &[(
            "ssh_config",
            Some("# the host's own ssh_config (sentinel)\n"),
        )],
    );
    assert_sshd_setup_leaves_volume_alone(&tb, &image, &sentinel);
}

#[test]
fn sshd_setup_does_not_rewrite_passwd_through_an_image_etc_symlink_to_a_volume() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(()) = sshd_enabled(&tb) else { return };
    let Some(image) = attack_image(&tb, "etc-link") else {
        return;
    };
    // The image has no /bin/sh (the shell the plugin gives the user), so sshd
    // setup writes an /etc/passwd naming /bin/sh; with /etc -> /data that is
    // the volume's. The ssh/ directory lets the /etc/ssh/ssh_config write
    // before it get that far.
    let sentinel = Scratch::root_owned(
        &tb,
        "sshd-etc",
        &[
            ("passwd", Some("root:x:0:0:sentinel:/root:/bin/sh\n")),
            ("group", Some("root:x:0:\n")),
            ("ssh", None),
            ("ssh/ssh_config", Some("# sentinel\n")),
        ],
    );
    assert_sshd_setup_leaves_volume_alone(&tb, &image, &sentinel);
}

#[test]
fn sshd_setup_does_not_create_its_ssh_wrapper_through_an_image_usr_bin_symlink_to_a_volume() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(()) = sshd_enabled(&tb) else { return };
    let Some(image) = attack_image(&tb, "usr-bin-link") else {
        return;
    };
    // No `ssh` in it: sshd setup writes its /usr/bin/ssh wrapper when the
    // image has none.
    let sentinel = Scratch::root_owned(&tb, "sshd-usr-bin", &[("env", Some("sentinel\n"))]);
    assert_sshd_setup_leaves_volume_alone(&tb, &image, &sentinel);
}

// ---- 3. module destinations following image symlinks -----------------------

/// Every directory under `dir` (relative paths), down to `depth` levels.
fn dirs_under(dir: &Path, depth: usize) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![(dir.to_owned(), 0)];
    while let Some((d, level)) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                out.insert(e.path().strip_prefix(dir).unwrap().to_owned());
                if level + 1 < depth {
                    todo.push((e.path(), level + 1));
                }
            }
        }
    }
    out
}

#[test]
fn module_destinations_do_not_follow_an_image_symlink_into_the_nodes_spool_dir() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let conf = std::fs::read_to_string(tb.config_path()).unwrap_or_default();
    for m in ["gpu", "pmix"] {
        if !conf.contains(&format!("[modules.{m}]")) {
            assert!(
                !required(),
                "the site config has no [modules.{m}]: up.d/25-modules.sh did not run"
            );
            eprintln!("\n!!!! SKIPPED module attack test: no [modules.{m}]\n");
            return;
        }
    }
    assert!(tb.nodes().iter().any(|n| n == NODE), "no node {NODE}");
    let Some(plain) = busybox(&tb) else { return };
    let Some(image) = attack_image(&tb, "opt-shifter-link") else {
        return;
    };
    let spool = tb.dir.join("spool");
    // The same step with the plain image first, so whatever slurmd itself
    // keeps in its spool dir exists before the snapshot.
    let r = srun(
        &tb,
        &[
            "-N1",
            "-w",
            NODE,
            &format!("--image={plain}"),
            "--module=pmix,gpu",
            "true",
        ],
    );
    r.assert_ok();
    tb.assert_nothing_left();
    let before = dirs_under(&spool, 4);
    // /opt/shifter -> $SHIFTER_TB/spool/n1 in the image; pmix binds the host's
    // $SHIFTER_TB/spool at the same path, so gpu's /opt/shifter/gpu/lib
    // resolves into the host's spool dir.
    let r = srun(
        &tb,
        &[
            "-N1",
            "-w",
            NODE,
            &format!("--image={image}"),
            "--module=pmix,gpu",
            "sh",
            "-c",
            "ls /opt/shifter/gpu/lib",
        ],
    );
    tb.assert_nothing_left();
    let after = dirs_under(&spool, 4);
    let new: Vec<&PathBuf> = after.difference(&before).collect();
    // Leave the spool as it was for the tests after this one.
    for n in &new {
        let _ = std::fs::remove_dir_all(spool.join(n));
    }
    assert!(
        new.is_empty(),
        "new directories in the host's spool dir {}: {new:?}\nsrun {r}",
        spool.display()
    );
    if !r.success() {
        assert!(
            r.stderr.contains("/opt/shifter/gpu/lib"),
            "the refusal should name the module destination: {r}"
        );
    }
}

// ---- 4. the setuid shifter's privileges, as the user sees them -------------

fn status_field<'a>(status: &'a str, key: &str) -> Vec<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default()
}

#[test]
fn setuid_shifter_runs_the_command_with_only_the_users_ids_and_no_privilege() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(image) = busybox(&tb) else { return };
    let started = Instant::now();
    let (child, out) = spawn_shifter(
        &tb,
        &[&format!("--image={image}"), "/bin/cat", "/proc/self/status"],
    );
    let r = finish(child, &out, started, T);
    r.assert_ok();
    let (uid, gid) = (uid_of(tb.user()).to_string(), gid_of(tb.user()).to_string());
    assert_eq!(
        status_field(&r.stdout, "Uid"),
        [&uid, &uid, &uid, &uid],
        "{r}"
    );
    assert_eq!(
        status_field(&r.stdout, "Gid"),
        [&gid, &gid, &gid, &gid],
        "{r}"
    );
    let groups = Command::new("id").args(["-G", tb.user()]).output().unwrap();
    let mut want: Vec<String> = String::from_utf8_lossy(&groups.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    want.sort();
    let mut got: Vec<String> = status_field(&r.stdout, "Groups")
        .into_iter()
        .map(str::to_owned)
        .collect();
    got.sort();
    assert_eq!(got, want, "supplementary groups: {r}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(&r.stdout, cap),
            ["0000000000000000"],
            "{cap}: {r}"
        );
    }
    assert_eq!(status_field(&r.stdout, "NoNewPrivs"), ["1"], "{r}");
}

/// Run as the user: waits for "PID NODE_PID" on stdin (NODE_PID: a process
/// in the node's mount namespace, slurmd), then, while that process is
/// `shifter`, sends it SIGSTOP as fast as it can. Each stop that works is
/// followed by a look at the stopped process (its ids, and whether its
/// container setup had begun: its mountinfo is no longer the node's, as it
/// has a mount namespace of its own) and a SIGCONT; it ends once the process has become the user's
/// (all ids the user's), has exec'd the command, is gone, or was stopped as
/// root during its setup. Prints a `STOPPED ...` line for the first stop and
/// every stop during the setup, and a `SUMMARY ...` line.
const STOPPER: &str = r#"
import os, signal, sys, time
def status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    return {k: v.split() for k, _, v in (l.partition(":") for l in text.splitlines())}
def mounts(pid):
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return f.read()
    except OSError:
        return None
def in_setup(pid):
    # Its own mount namespace (new mount ids) or mounts: the setup has begun.
    own = mounts(pid)
    return own is not None and own != mounts(node)
me = str(os.getuid())
print("ready", flush=True)
pid, node = (int(x) for x in sys.stdin.readline().split())
tries = eperm = eperm_in_setup = tries_in_setup = stops = 0
seen = False
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    st = status(pid)
    if st is None or st["State"][0] in "ZX":
        break
    if st["Name"][0] != "shifter":
        if seen:
            break
        continue
    seen = True
    setup = in_setup(pid)
    tries += 1
    tries_in_setup += setup
    try:
        os.kill(pid, signal.SIGSTOP)
    except PermissionError:
        eperm += 1
        eperm_in_setup += setup
        continue
    except ProcessLookupError:
        break
    for _ in range(5000):
        after = status(pid)
        if after is None or after["State"][0] in "TtZX":
            break
        time.sleep(0.0002)
    if after is None:
        break
    setup = in_setup(pid)
    line = f"STOPPED uid={','.join(after['Uid'])} state={after['State'][0]} in_setup={setup}"
    stops += 1
    if setup or stops == 1:
        print(line, flush=True)
    os.kill(pid, signal.SIGCONT)
    if all(u == me for u in after["Uid"]):
        break
    if setup and after["Uid"][1] == "0":
        break  # froze root in the middle of its work: that is the verdict
print(f"SUMMARY tries={tries} tries_in_setup={tries_in_setup} eperm={eperm} eperm_in_setup={eperm_in_setup} stops={stops} seen_shifter={seen}", flush=True)
"#;

#[test]
fn user_cannot_stop_setuid_shifter_while_it_runs_as_root() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(image) = busybox(&tb) else { return };
    // A per-node cache keeps shifter busy as root for a while (mkfs.xfs).
    let cache = format!(
        "--volume={}:/c:perNodeCache=size={CACHE_SIZE}",
        cache_dir(&tb).display()
    );
    let mut tried_during_setup = false;
    let mut reports = Vec::new();
    for attempt in 0..5 {
        let mut stopper = Command::new("runuser")
            .args(["-u", tb.user(), "--", "python3", "-c", STOPPER])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("runuser (util-linux)");
        let mut lines = BufReader::new(stopper.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
        let started = Instant::now();
        let (child, out) = spawn_shifter(&tb, &[&format!("--image={image}"), &cache, "/bin/true"]);
        writeln!(
            stopper.stdin.take().unwrap(),
            "{} {}",
            child.id(),
            slurmd_pid(&tb, NODE)
        )
        .unwrap();
        let said: Vec<String> = lines.map_while(Result::ok).collect();
        let _ = stopper.wait();
        let r = finish(child, &out, started, T);
        let report = format!("attempt {attempt}:\n  {}\nshifter {r}", said.join("\n  "));
        // A stop while euid was 0 and the container setup had begun: the user
        // froze root in the middle of its work.
        let landed: Vec<&String> = said
            .iter()
            .filter(|l| l.starts_with("STOPPED uid=") && l.contains("in_setup=True"))
            .filter(|l| l.split("uid=").nth(1).and_then(|u| u.split(',').nth(1)) == Some("0"))
            .collect();
        assert!(
            landed.is_empty(),
            "the user stopped the setuid shifter with SIGSTOP while it ran as root (euid 0) in its container setup: {landed:?}\n{report}"
        );
        r.assert_ok();
        let summary = said
            .iter()
            .find(|l| l.starts_with("SUMMARY"))
            .unwrap_or_else(|| panic!("the stopper printed no summary: {report}"));
        eprintln!("{}", said.join("\n"));
        tried_during_setup |= !summary.contains("tries_in_setup=0 ");
        reports.push(report);
        if tried_during_setup {
            break;
        }
    }
    assert!(
        tried_during_setup,
        "the user's SIGSTOPs never came while shifter set up the container, so this test proved nothing:\n{}",
        reports.join("\n")
    );
    tb.assert_no_cache_left();
}
