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
        test_skip::skip("attack test", &why);
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
    spawn_shifter_limited(tb, &[], args)
}

/// [`spawn_shifter`] under the resource limits `prlimit` sets from `limits`
/// (e.g. `--fsize=0:0`), as the user could set them with `ulimit`.
fn spawn_shifter_limited(tb: &Testbed, limits: &[&str], args: &[&str]) -> (Child, PathBuf) {
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
        .args(["prlimit"])
        .args(limits)
        .args(["--", "setpriv", &format!("--reuid={}", uid_of(user))])
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

/// One flip round's user directory `w` (with `v` and `c`, and the user's
/// symlinks `lv -> /victim2` and `lc -> /victim` to flip them with) and the
/// `--volume` that binds the two root-owned victims, `w`, the `:ro` source at
/// `w/v` and a per-node cache at `w/c`.
fn flip_round_dir(
    tb: &Testbed,
    name: &str,
    [victim, victim2]: [&Scratch; 2],
    src: &Scratch,
) -> (Scratch, String) {
    let w = Scratch::user_owned(tb, name, &["v", "c"]);
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
        cache_dir(tb).display()
    );
    (w, volumes)
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
        let (w, volumes) =
            flip_round_dir(&tb, &format!("flip-w{round}"), [&victim, &victim2], &src);
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
        assert_flip_round_mounts(
            &label,
            &r,
            &src_root,
            &victim_roots,
            &bind_root_of(&tb, w.path()),
        );
    }
    assert!(freezes_total > 0, "shifter was never frozen at a new mount");
    tb.assert_no_cache_left();
}

/// The same flips through `srun --image`, where root's side runs in
/// slurmstepd (which the user cannot stop): a thread flips the names as fast
/// as it can for the whole step, for a bounded number of steps.
#[test]
fn volumes_flipped_with_symlinks_during_srun_setup_keep_their_flags_and_owners() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(image) = busybox(&tb) else { return };
    let victim = Scratch::root_owned(&tb, "sflip-victim", &[("keep", Some("sentinel\n"))]);
    let victim2 = Scratch::root_owned(&tb, "sflip-victim2", &[("keep", Some("sentinel\n"))]);
    let before = snapshot(victim.path());
    let before2 = snapshot(victim2.path());
    let src = Scratch::user_owned(&tb, "sflip-src", &[]);
    std::fs::write(src.path().join("marker"), "the ro volume\n").unwrap();
    let src_root = bind_root_of(&tb, src.path());
    let victim_roots = [
        bind_root_of(&tb, victim.path()),
        bind_root_of(&tb, victim2.path()),
    ];
    const ROUNDS: usize = 12;
    let mut flips_total = 0usize;
    for round in 0..=ROUNDS {
        let attack = round > 0;
        let (w, volumes) =
            flip_round_dir(&tb, &format!("sflip-w{round}"), [&victim, &victim2], &src);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (r, flips) = std::thread::scope(|s| {
            let flipper = s.spawn(|| {
                let mut n = 0usize;
                while attack && !stop.load(Ordering::Relaxed) {
                    exchange(w.path(), "v", "lv");
                    exchange(w.path(), "c", "lc");
                    n += 1;
                    std::thread::yield_now();
                }
                n
            });
            let r = srun(
                &tb,
                &[
                    "-N1",
                    "-w",
                    NODE,
                    &format!("--image={image}"),
                    &volumes,
                    "cat",
                    "/proc/self/mountinfo",
                ],
            );
            stop.store(true, Ordering::Relaxed);
            (r, flipper.join().unwrap())
        });
        flips_total += flips;
        let label = if attack {
            format!("srun attack round {round} ({flips} flips)")
        } else {
            "srun baseline round (no attack)".to_owned()
        };
        eprintln!(
            "{label}: exit {:?}, {}",
            r.status,
            r.stderr.lines().last().unwrap_or("")
        );
        assert_unchanged(victim.path(), &before, &format!("{label}: srun {r}"));
        assert_unchanged(victim2.path(), &before2, &format!("{label}: srun {r}"));
        if !r.success() {
            assert!(attack, "{label}: srun failed: {r}");
            assert!(
                r.stderr.contains("shifter") && !r.stderr.contains("panicked"),
                "{label}: not a clean refusal by the plugin: {r}"
            );
            continue;
        }
        assert_flip_round_mounts(
            &label,
            &r,
            &src_root,
            &victim_roots,
            &bind_root_of(&tb, w.path()),
        );
    }
    assert!(flips_total > 0, "the names were never flipped");
    tb.assert_nothing_left();
}

/// What the container of one flip round shows in its mountinfo: the `:ro`
/// volume `ro,nosuid,nodev` on every submount, the other volumes `nosuid,nodev`
/// and not `ro`, the one per-node cache `nosuid,nodev`.
fn assert_flip_round_mounts(
    label: &str,
    r: &Run,
    src_root: &str,
    victim_roots: &[String; 2],
    w_root: &str,
) {
    let mounts = parse_mountinfo(&r.stdout);
    assert!(!mounts.is_empty(), "{label}: no mountinfo printed: {r}");
    let n = assert_mount_flags(
        &mounts,
        src_root,
        &["ro", "nosuid", "nodev"],
        &format!("{label}: the :ro volume"),
        r,
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
            r,
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
        w_root,
        &["nosuid", "nodev"],
        &format!("{label}: the /w volume"),
        r,
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
    test_skip::skip(
        "sshd attack test",
        "the cluster has no sshd (SHIFTER_SSHD_PORT unset)",
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
            test_skip::skip("module attack test", &format!("no [modules.{m}]"));
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

/// A limit the user sets before exec'ing the setuid binary binds root too:
/// a soft `RLIMIT_FSIZE` of 64 bytes (room for the command's output line
/// only) would kill root's write of the container's /etc/passwd with SIGXFSZ, a tiny `RLIMIT_NOFILE` would fail a mount
/// half-way. The privileged part runs with them lifted; the command gets
/// them back. (Soft limits: raising a hard one needs CAP_SYS_RESOURCE, which
/// some nodes' root lacks, this test VM's included.)
#[test]
fn users_resource_limits_do_not_bind_the_privileged_setup_but_do_bind_the_command() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(image) = busybox(&tb) else { return };
    let started = Instant::now();
    let (child, out) = spawn_shifter_limited(
        &tb,
        &["--fsize=64:unlimited", "--nofile=40:4096"],
        &[
            &format!("--image={image}"),
            "/bin/sh",
            "-c",
            "echo fsize=$(ulimit -f) nofile=$(ulimit -n)",
        ],
    );
    let r = finish(child, &out, started, T);
    r.assert_ok();
    assert_eq!(r.stdout.trim(), "fsize=0 nofile=40", "{r}");
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

// ---- 5. node-side policy with the submit side bypassed (issue 14) ----------
//
// srun loads the plugin only if the slurm.conf it reads says so, and
// SLURM_CONF is the user's to set: with a copy whose plugstack lacks shifter,
// srun checks nothing, resolves nothing and pins nothing, and the job's
// environment is whatever the user exported. slurmstepd (the node's own
// slurm.conf, with the plugin) reads the request from that environment
// (SHIFTER_IMAGE, which must be an id: there, SHIFTER_VOLUME, ...) or from the
// options Slurm forwards (`_SLURM_SPANK_OPTION_shifter_*`, also just job
// environment). Whatever the user forges there, the node must refuse what the
// submit side would have refused, and say why.

/// The forwarded-option variables (spank-plugin's options.rs; Slurm names
/// them `_SLURM_SPANK_OPTION_<plugin>_<option>`).
const FORWARDED_IMAGE: &str = "_SLURM_SPANK_OPTION_shifter_image";
const FORWARDED_VOLUME: &str = "_SLURM_SPANK_OPTION_shifter_volume";

/// The user's own slurm.conf: the cluster's, with a plugstack.conf that does
/// not load shifter. Both files are the user's, in a directory of the user's.
struct BypassConf {
    dir: Scratch,
}

impl BypassConf {
    fn new(tb: &Testbed) -> BypassConf {
        let dir = Scratch::user_owned(tb, "bypass-conf", &[]);
        let plugstack = dir.path().join("plugstack.conf");
        std::fs::write(&plugstack, "# the user's own plugstack: no shifter\n").unwrap();
        let cluster = std::fs::read_to_string(tb.var("SLURM_CONF")).unwrap();
        assert!(
            cluster.lines().any(|l| l.starts_with("PlugStackConfig=")),
            "the cluster's slurm.conf names no PlugStackConfig"
        );
        let conf: String = cluster
            .lines()
            .map(|l| {
                if l.starts_with("PlugStackConfig=") {
                    format!("PlugStackConfig={}\n", plugstack.display())
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let slurm_conf = dir.path().join("slurm.conf");
        std::fs::write(&slurm_conf, conf).unwrap();
        for f in [&plugstack, &slurm_conf] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
            lchown(f, Some(uid_of(tb.user())), Some(gid_of(tb.user()))).unwrap();
        }
        BypassConf { dir }
    }

    fn slurm_conf(&self) -> String {
        self.dir.path().join("slurm.conf").display().to_string()
    }

    /// `srun ARGS` as `user` with this slurm.conf and the forged `env`.
    fn srun(&self, tb: &Testbed, user: &str, env: &[(&str, &str)], args: &[&str]) -> Run {
        let conf = self.slurm_conf();
        let mut all_env = vec![("SLURM_CONF", conf.as_str())];
        all_env.extend_from_slice(env);
        let mut all = vec!["srun", "-N1", "-w", NODE];
        all.extend_from_slice(args);
        tb.run_as_with_env(user, &all, &all_env, T)
    }
}

/// `id:<hex>` of `image` as `user` sees it (shifterimg lookup).
fn pinned_id(tb: &Testbed, user: &str, image: &str) -> String {
    let r = tb.shifterimg(user, &["lookup", image]);
    r.assert_ok();
    let hex = r.stdout.trim().rsplit(':').next().unwrap_or_default();
    assert_eq!(hex.len(), 64, "lookup printed {r}");
    format!("id:{hex}")
}

/// The pulled busybox as the `id:` a forged request must name.
fn busybox_id(tb: &Testbed) -> Option<String> {
    let image = busybox(tb)?;
    Some(pinned_id(tb, tb.user(), &image))
}

/// Why `r` is not a refusal by node n1 (not by srun) whose message holds
/// every one of `needles` with the task never run; None when it is one.
fn not_refused_by_the_node(r: &Run, needles: &[&str]) -> Option<String> {
    if r.success() {
        return Some("the node ACCEPTED the forged request".into());
    }
    if r.stdout.contains("task-ran") {
        return Some("the task ran although the step failed".into());
    }
    if r.stderr.contains("panicked") || r.stderr.contains("internal error") {
        return Some("the plugin crashed".into());
    }
    let prefix = format!("shifter: on node {NODE}: ");
    let Some(line) = r.stderr.lines().find(|l| l.contains(&prefix)) else {
        return Some(format!(
            "no refusal from node {NODE} ({prefix:?}) in srun's stderr"
        ));
    };
    let missing: Vec<&&str> = needles.iter().filter(|n| !line.contains(**n)).collect();
    if !missing.is_empty() {
        return Some(format!("the node's refusal lacks {missing:?}: {line}"));
    }
    None
}

/// Panics unless the step failed on node n1 with the plugin's message
/// holding every one of `needles`, and the task never ran.
#[track_caller]
fn assert_refused_by_the_node(r: &Run, needles: &[&str], what: &str) {
    if let Some(why) = not_refused_by_the_node(r, needles) {
        panic!("{what}: {why}\n{r}");
    }
}

#[test]
fn bypassed_submit_side_a_forged_request_still_runs_so_the_refusals_below_mean_something() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(id) = busybox_id(&tb) else { return };
    let bypass = BypassConf::new(&tb);
    // srun really runs without the plugin: it does not know --image.
    let r = bypass.srun(&tb, tb.user(), &[], &[&format!("--image={id}"), "true"]);
    r.assert_failed();
    assert!(
        r.stderr.contains("--image"),
        "srun with the user's slurm.conf should not know --image: {r}"
    );
    let data = Scratch::user_owned(&tb, "bypass-ok", &[]);
    std::fs::write(data.path().join("marker"), "from-the-host\n").unwrap();
    let volume = format!("{}:/data", data.show());
    let cmd = [
        "sh",
        "-c",
        "grep ^ID= /etc/os-release; cat /data/marker; echo task-ran",
    ];
    // Both ways a forged request reaches the node.
    let channels: [(&str, Vec<(&str, &str)>); 2] = [
        (
            "SHIFTER_IMAGE/SHIFTER_VOLUME",
            vec![("SHIFTER_IMAGE", id.as_str()), ("SHIFTER_VOLUME", &volume)],
        ),
        (
            "forwarded options",
            vec![(FORWARDED_IMAGE, id.as_str()), (FORWARDED_VOLUME, &volume)],
        ),
    ];
    for (channel, env) in &channels {
        let r = bypass.srun(&tb, tb.user(), env, &cmd);
        assert!(r.success(), "{channel}: the forged request failed: {r}");
        assert!(
            r.stdout.contains("ID=shifter-busybox"),
            "{channel}: the task did not run in the image: {r}"
        );
        assert!(
            r.stdout.contains("from-the-host"),
            "{channel}: the forged volume is missing: {r}"
        );
    }
    tb.assert_nothing_left();
}

#[test]
fn bypassed_submit_side_each_forbidden_destination_is_refused_by_the_node_by_name() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(id) = busybox_id(&tb) else { return };
    let bypass = BypassConf::new(&tb);
    let src = Scratch::user_owned(&tb, "bypass-dst", &[]);
    // The rule texts of runtime-core's volume.rs (BUILTIN_RULES).
    let cases = [
        ("/etc", "/etc is generated by the runtime"),
        ("/proc", "/proc is the kernel's process filesystem"),
        ("/sys", "/sys is the kernel's system filesystem"),
        ("/dev", "/dev holds the container's device nodes"),
        ("/var", "/var holds the image's system state"),
        ("/", "/ is the container root"),
    ];
    let mut failures = Vec::new();
    for (dst, rule) in cases {
        let volume = format!("{}:{dst}", src.show());
        for (channel, env) in [
            (
                "SHIFTER_VOLUME",
                [("SHIFTER_IMAGE", id.as_str()), ("SHIFTER_VOLUME", &volume)],
            ),
            (
                "forwarded --volume",
                [(FORWARDED_IMAGE, id.as_str()), (FORWARDED_VOLUME, &volume)],
            ),
        ] {
            let r = bypass.srun(&tb, tb.user(), &env, &["sh", "-c", "echo task-ran"]);
            let what = format!("{channel}={volume}");
            let needle = format!("volume destination {dst} is forbidden");
            if let Some(why) = not_refused_by_the_node(&r, &[&needle, rule]) {
                failures.push(format!("{what}: {why}\n{r}"));
            }
        }
    }
    tb.assert_nothing_left();
    assert!(
        failures.is_empty(),
        "the node did not refuse these forbidden destinations with their reason:\n{}",
        failures.join("\n")
    );
}

#[test]
fn bypassed_submit_side_an_unreadable_volume_source_is_refused_by_the_node_by_name() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(id) = busybox_id(&tb) else { return };
    let bypass = BypassConf::new(&tb);
    // A root-owned 0700 directory with a world-readable directory and file in
    // it: the user can open neither the directory nor anything below it.
    let secret = Scratch::root_owned(
        &tb,
        "bypass-secret",
        &[("open", None), ("open/key", Some("host-secret-42\n"))],
    );
    std::fs::set_permissions(secret.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let before = snapshot(secret.path());
    let below = secret.path().join("open");
    for source in [secret.path(), below.as_path()] {
        let r = tb.run_as(tb.user(), &["ls", &source.display().to_string()], T);
        assert!(!r.success(), "the user can read {}: {r}", source.display());
        let volume = format!("{}:/data", source.display());
        let r = bypass.srun(
            &tb,
            tb.user(),
            &[("SHIFTER_IMAGE", id.as_str()), ("SHIFTER_VOLUME", &volume)],
            &["sh", "-c", "echo task-ran; cat /data/key /data/open/key"],
        );
        assert!(
            !r.stdout.contains("host-secret-42"),
            "the user read a root-only file through a forged volume: {r}"
        );
        let needle = format!("cannot read your volume source {}", source.display());
        assert_refused_by_the_node(
            &r,
            &[&needle, "EACCES"],
            &format!("SHIFTER_VOLUME={volume}"),
        );
    }
    tb.assert_nothing_left();
    assert_unchanged(secret.path(), &before, &"after the forged volumes");
}

/// A busybox image no other test has (its config carries `marker` in its
/// ENV, so its manifest digest, the image id, is its own), pushed to the
/// cluster's registry; returns the `docker:` reference.
fn push_unique_image(tb: &Testbed, name: &str, marker: &str) -> String {
    use serde_json::Value;
    let src = tb.dir.join("oci/busybox");
    let dst = tb
        .dir
        .join(format!("oci-policy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    tb.run_root(
        &[
            "cp",
            "-a",
            &src.display().to_string(),
            &dst.display().to_string(),
        ],
        T,
    )
    .assert_ok();
    let blob_path = |digest: &str| {
        dst.join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    };
    let write_blob = |bytes: &[u8]| -> String {
        let digest = shifter_integration::registry::sha256_digest(bytes);
        std::fs::write(blob_path(&digest), bytes).unwrap();
        digest
    };
    let read_json =
        |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let mut index = read_json(&dst.join("index.json"));
    let mdigest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let mut manifest = read_json(&blob_path(&mdigest));
    let cdigest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let mut config = read_json(&blob_path(&cdigest));
    let inner = config
        .as_object_mut()
        .unwrap()
        .entry("config")
        .or_insert_with(|| Value::Object(Default::default()));
    let env = inner
        .as_object_mut()
        .unwrap()
        .entry("Env")
        .or_insert_with(|| Value::Array(Vec::new()));
    env.as_array_mut()
        .unwrap()
        .push(Value::String(format!("SHIFTER_POLICY_MARKER={marker}")));
    let cbytes = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = Value::String(write_blob(&cbytes));
    manifest["config"]["size"] = Value::from(cbytes.len());
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = Value::String(write_blob(&mbytes));
    index["manifests"][0]["size"] = Value::from(mbytes.len());
    std::fs::write(dst.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let repo_tag = format!("policy-{name}-{}:latest", std::process::id());
    let r = tb.run_root(
        &[
            "skopeo",
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--format",
            "v2s2",
            &format!("oci:{}:latest", dst.display()),
            &format!("docker://{}/{repo_tag}", tb.registry()),
        ],
        Duration::from_secs(120),
    );
    let _ = std::fs::remove_dir_all(&dst);
    r.assert_ok();
    format!("docker:{}/{repo_tag}", tb.registry())
}

#[test]
fn bypassed_submit_side_another_users_private_image_is_refused_by_the_node_by_name() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    if tb.gateway().is_none() {
        return;
    }
    let marker = format!("private-{}", std::process::id());
    let image = push_unique_image(&tb, "private", &marker);
    // shiftertest2's own image: pulled by it, for it alone.
    let owner = tb.user2();
    tb.shifterimg(owner, &["pull", "--user", owner, &image])
        .assert_ok();
    let id = pinned_id(&tb, owner, &image);
    // The gateway keeps it from the test user...
    let r = tb.shifterimg(tb.user(), &["lookup", &image]);
    assert!(
        !r.success(),
        "the gateway showed user2's private image to the user: {r}"
    );
    let bypass = BypassConf::new(&tb);
    let cmd = [
        "sh",
        "-c",
        "echo task-ran; echo marker=$SHIFTER_POLICY_MARKER",
    ];
    // ...the owner can run it the same forged way (so the id is right)...
    let r = bypass.srun(&tb, owner, &[("SHIFTER_IMAGE", id.as_str())], &cmd);
    r.assert_ok();
    assert!(r.stdout.contains(&format!("marker={marker}")), "{r}");
    // ...and the node refuses it to the user, by either channel.
    let hex = id.strip_prefix("id:").unwrap();
    let user_says = format!(
        "user {} (uid {}) is not in its ACL",
        tb.user(),
        uid_of(tb.user())
    );
    for (channel, var) in [
        ("SHIFTER_IMAGE", "SHIFTER_IMAGE"),
        ("forwarded --image", FORWARDED_IMAGE),
    ] {
        let r = bypass.srun(&tb, tb.user(), &[(var, id.as_str())], &cmd);
        assert!(
            !r.stdout.contains(&marker),
            "{channel}: the user ran another user's private image: {r}"
        );
        assert_refused_by_the_node(
            &r,
            &[&format!("image {hex} is restricted"), &user_says],
            &format!("{channel}={id}"),
        );
    }
    tb.assert_nothing_left();
}

#[test]
fn ro_volume_of_the_users_own_directory_refuses_writes_with_erofs_and_keeps_the_host_file() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(id) = busybox_id(&tb) else { return };
    // The user's own directory and file: only the mount flag stops writes.
    let dir = Scratch::user_owned(&tb, "ro-own", &[]);
    let file = dir.path().join("kept");
    std::fs::write(&file, "the user's own file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    lchown(&file, Some(uid_of(tb.user())), Some(gid_of(tb.user()))).unwrap();
    let f = file.display().to_string();
    let d = dir.show();
    tb.run_as(tb.user(), &["test", "-w", &f], T).assert_ok();
    tb.run_as(tb.user(), &["test", "-w", &d], T).assert_ok();
    let before = snapshot(dir.path());
    let script = "echo task-ran; cat /r/kept; \
        echo changed > /r/kept; echo write=$?; \
        echo more >> /r/kept; echo append=$?; \
        touch /r/new; echo touch=$?; \
        mkdir /r/sub; echo mkdir=$?; \
        rm -f /r/kept; echo rm=$?; \
        mv /r/kept /r/moved; echo mv=$?";
    let volume = format!("{d}:/r:ro");
    let bypass = BypassConf::new(&tb);
    let runs = [
        (
            "srun --volume",
            srun(
                &tb,
                &[
                    "-N1",
                    "-w",
                    NODE,
                    &format!("--image={id}"),
                    &format!("--volume={volume}"),
                    "sh",
                    "-c",
                    script,
                ],
            ),
        ),
        (
            "forged SHIFTER_VOLUME",
            bypass.srun(
                &tb,
                tb.user(),
                &[("SHIFTER_IMAGE", id.as_str()), ("SHIFTER_VOLUME", &volume)],
                &["sh", "-c", script],
            ),
        ),
    ];
    for (how, r) in &runs {
        let changes = diff(&before, &snapshot(dir.path()));
        assert!(
            changes.is_empty(),
            "{how}: the :ro volume {d} was changed from inside the container:\n  {}\n{r}",
            changes.join("\n  ")
        );
        assert!(
            r.stdout.contains("task-ran"),
            "{how}: the task did not run: {r}"
        );
        assert!(
            r.stdout.contains("the user's own file"),
            "{how}: the volume is not mounted at /r: {r}"
        );
        for op in ["write", "append", "touch", "mkdir", "rm", "mv"] {
            assert!(
                !r.stdout.contains(&format!("{op}=0")),
                "{how}: {op} inside the :ro volume succeeded: {r}"
            );
        }
        let erofs = r.stderr.matches("Read-only file system").count();
        assert!(
            erofs >= 6,
            "{how}: expected every write to fail with EROFS (Read-only file system), saw {erofs}: {r}"
        );
    }
    tb.assert_nothing_left();
}

// ---- 6. the running step's mount namespace, and nothing after it ----------

/// Pids of the processes whose environment holds `needle` (`KEY=VALUE`).
fn pids_with_env(needle: &str) -> Vec<u32> {
    let needle = format!("{needle}\0");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ")) {
            if String::from_utf8_lossy(&env).contains(&needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Pids of the processes in mount namespace `ns` (`mnt:[N]`).
fn pids_in_mount_ns(ns: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_link(e.path().join("ns/mnt")).is_ok_and(|l| l.as_os_str() == ns) {
            out.push(pid);
        }
    }
    out
}

fn mount_ns(pid: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .unwrap_or_else(|e| panic!("ns/mnt of {pid}: {e}"))
        .display()
        .to_string()
}

/// The parent of `pid` (field 4 of `/proc/PID/stat`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// The value of `key` in the environment of `pid`.
fn env_of(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    String::from_utf8_lossy(&env)
        .split('\0')
        .find_map(|kv| kv.strip_prefix(&prefix).map(str::to_owned))
}

#[test]
fn running_step_has_its_mounts_nosuid_nodev_in_its_own_namespace_and_leaves_nothing() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(image) = busybox(&tb) else { return };
    let w = Scratch::user_owned(&tb, "leak-w", &[]);
    let r = Scratch::user_owned(&tb, "leak-r", &[]);
    std::fs::write(r.path().join("marker"), "ro volume\n").unwrap();
    let marker = format!("SHIFTER_LEAK_MARKER=leak-{}", std::process::id());
    let out = tb
        .dir
        .join("out")
        .join(format!("attack-leak-{}", std::process::id()));
    // The task runs until the test creates /w/stop (on the host).
    let mut srun = Command::new("runuser")
        .args([
            "-u",
            tb.user(),
            "--",
            "env",
            &marker,
            "srun",
            "-N1",
            "-w",
            NODE,
        ])
        .arg(format!("--image={image}"))
        .arg(format!("--volume={}:/w;{}:/r:ro", w.show(), r.show()))
        .args([
            "sh",
            "-c",
            "echo task-started; while [ ! -e /w/stop ]; do sleep 0.2; done; echo task-done",
        ])
        .env("SLURM_CONF", tb.var("SLURM_CONF"))
        .current_dir(tb.workdir())
        .stdin(Stdio::null())
        .stdout(File::create(out.with_extension("out")).unwrap())
        .stderr(File::create(out.with_extension("err")).unwrap())
        .spawn()
        .expect("runuser (util-linux)");
    let srun_pid = srun.id();
    let read_out = || {
        let rd = |ext: &str| std::fs::read_to_string(out.with_extension(ext)).unwrap_or_default();
        format!(
            "--- srun stdout ---\n{}\n--- srun stderr ---\n{}",
            rd("out"),
            rd("err")
        )
    };
    // The task: the `sh` of the step (srun and runuser carry the marker too).
    let mut task = None;
    let found = Testbed::wait_until(Duration::from_secs(60), || {
        task = pids_with_env(&marker)
            .into_iter()
            .find(|p| comm(*p).as_deref() == Some("sh") && env_of(*p, "SLURM_STEP_ID").is_some());
        task.is_some() || srun.try_wait().unwrap().is_some()
    });
    let Some(task) = task.filter(|_| found) else {
        let _ = kill(Pid::from_raw(srun_pid as i32), Signal::SIGKILL);
        let _ = srun.wait();
        panic!("the step's task never appeared:\n{}", read_out());
    };
    let job = env_of(task, "SLURM_JOB_ID").expect("the task has SLURM_JOB_ID");
    let inspect = || -> Result<String, String> {
        let ns = mount_ns(&task.to_string());
        let node_ns = mount_ns(&slurmd_pid(&tb, NODE));
        if ns == node_ns {
            return Err(format!("the task runs in the node's mount namespace {ns}"));
        }
        let text = std::fs::read_to_string(format!("/proc/{task}/mountinfo"))
            .map_err(|e| format!("mountinfo of task {task}: {e}"))?;
        let mounts = parse_mountinfo(&text);
        let mut problems = Vec::new();
        let at = |point: &str| mounts.iter().rfind(|m| m.point == point);
        // The container root, the user's volumes with their flags, and the
        // runtime's own mounts.
        let expect: [(&str, &[&str]); 4] = [
            ("/", &["nosuid", "nodev"]),
            ("/w", &["rw", "nosuid", "nodev"]),
            ("/r", &["ro", "nosuid", "nodev"]),
            ("/tmp", &["nosuid", "nodev"]),
        ];
        for (point, flags) in expect {
            match at(point) {
                None => problems.push(format!("nothing mounted at {point}")),
                Some(m) => {
                    for f in flags {
                        if !m.options.iter().any(|o| o == f) {
                            problems.push(format!("{point} lacks {f}: {}", m.line));
                        }
                    }
                }
            }
        }
        for (point, dir) in [("/w", &w), ("/r", &r)] {
            if let Some(m) = at(point) {
                let want = bind_root_of(&tb, dir.path());
                if m.root != want {
                    problems.push(format!(
                        "{point} binds {} instead of {want}: {}",
                        m.root, m.line
                    ));
                }
            }
        }
        // Everything the user can reach is nosuid, and nodev except the
        // container's /dev.
        for m in &mounts {
            if !m.options.iter().any(|o| o == "nosuid") {
                problems.push(format!("{} is mounted without nosuid: {}", m.point, m.line));
            }
            let dev = m.point == "/dev" || m.point.starts_with("/dev/");
            if !dev && !m.options.iter().any(|o| o == "nodev") {
                problems.push(format!("{} is mounted without nodev: {}", m.point, m.line));
            }
        }
        // The image itself is mounted outside the task's root: slurmstepd
        // (the task's parent, in the same namespace, at the host's root)
        // sees it under mount_root.
        let stepd = parent_of(task).ok_or_else(|| format!("task {task} has no parent"))?;
        if !comm(stepd).is_some_and(|c| c.starts_with("slurmstepd")) {
            problems.push(format!(
                "the task's parent {stepd} is {:?}, not slurmstepd",
                comm(stepd)
            ));
        }
        if mount_ns(&stepd.to_string()) != ns {
            problems.push(format!(
                "slurmstepd {stepd} is not in the task's namespace {ns}"
            ));
        }
        let stepd_text = std::fs::read_to_string(format!("/proc/{stepd}/mountinfo"))
            .map_err(|e| format!("mountinfo of slurmstepd {stepd}: {e}"))?;
        let mount_root = tb.var("SHIFTER_MOUNT_ROOT");
        let images: Vec<MountLine> = parse_mountinfo(&stepd_text)
            .into_iter()
            .filter(|m| m.fstype == "squashfs")
            .collect();
        if images.len() != 1 {
            problems.push(format!(
                "{} squashfs mounts in the step's namespace, expected the image's one:\n{stepd_text}",
                images.len()
            ));
        }
        for m in &images {
            if !m.point.starts_with(mount_root) {
                problems.push(format!(
                    "the image is mounted outside mount_root: {}",
                    m.line
                ));
            }
            for f in ["ro", "nosuid", "nodev"] {
                if !m.options.iter().any(|o| o == f) {
                    problems.push(format!("the image mount lacks {f}: {}", m.line));
                }
            }
        }
        if problems.is_empty() {
            Ok(ns)
        } else {
            Err(format!(
                "{}\n--- mountinfo of task {task} ---\n{text}",
                problems.join("\n")
            ))
        }
    };
    let inspected = inspect();
    // End the step the normal way, whatever the inspection found.
    std::fs::write(w.path().join("stop"), "").unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(st) = srun.try_wait().unwrap() {
            break Some(st);
        }
        if started.elapsed() > T {
            let _ = kill(Pid::from_raw(srun_pid as i32), Signal::SIGKILL);
            let _ = srun.wait();
            tb.run_root(&["scancel", &job], T);
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = read_out();
    let _ = std::fs::remove_file(out.with_extension("out"));
    let _ = std::fs::remove_file(out.with_extension("err"));
    let ns =
        inspected.unwrap_or_else(|e| panic!("inside the running step (job {job}):\n{e}\n{output}"));
    assert!(
        status.is_some_and(|s| s.success()),
        "the step did not end on its own after /w/stop: {status:?}\n{output}"
    );
    assert!(output.contains("task-done"), "{output}");
    // Nothing of the step outlives it: its processes, its namespace, its
    // loop device, its mounts in the node's namespace.
    tb.assert_nothing_left();
    let gone = Testbed::wait_until(Duration::from_secs(15), || {
        pids_with_env(&format!("SLURM_JOB_ID={job}")).is_empty() && pids_in_mount_ns(&ns).is_empty()
    });
    assert!(
        gone,
        "job {job} left processes {:?}, and in its mount namespace {ns}: {:?}",
        pids_with_env(&format!("SLURM_JOB_ID={job}")),
        pids_in_mount_ns(&ns)
    );
    let images = PathBuf::from(tb.var("SHIFTER_IMAGE_DIR"));
    assert!(
        Testbed::loop_devices_backed_by(&images).is_empty(),
        "loop devices of the image store left: {:?}",
        Testbed::loop_devices_backed_by(&images)
    );
    let mount_root = tb.var("SHIFTER_MOUNT_ROOT");
    for node in tb.nodes() {
        let mi =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", slurmd_pid(&tb, &node))).unwrap();
        let left: Vec<&str> = mi
            .lines()
            .filter(|l| l.contains(mount_root) || l.contains(" nsfs ") || l.contains(" overlay "))
            .collect();
        assert!(
            left.is_empty(),
            "node {node} still has mounts of the step: {left:#?}"
        );
    }
}

/// A host directory covered by a mount (here a tmpfs the site put over
/// `<dir>/covered`) hides what lies beneath it. A plain, non-recursive bind
/// of `<dir>` would uncover it in the container: files the user cannot see on
/// the host. Every volume is cloned with its submounts, `rec` or not, and a
/// read-only volume is read-only in every submount too.
#[test]
fn volume_binds_keep_host_submounts_over_what_they_hide_and_ro_reaches_every_submount() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(id) = busybox_id(&tb) else { return };
    let dir = Scratch::user_owned(&tb, "covered", &["covered"]);
    let covered = dir.path().join("covered");
    std::fs::write(covered.join("hidden-by-the-site"), "under the mount\n").unwrap();
    let node_ns = slurmd_pid(&tb, NODE);
    let in_node = |args: &[&str]| {
        let st = Command::new("nsenter")
            .args(["-t", &node_ns, "-m", "--"])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
    };
    let c = covered.display().to_string();
    in_node(&["mount", "-t", "tmpfs", "-o", "mode=0777", "site-cover", &c]);
    in_node(&["touch", &format!("{c}/visible-on-the-host")]);
    struct Unmount(String, String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("nsenter")
                .args(["-t", &self.0, "-m", "--", "umount", "-l", &self.1])
                .status();
        }
    }
    let _unmount = Unmount(node_ns.clone(), c.clone());
    let d = dir.show();
    for opts in ["", ":ro"] {
        let r = srun(
            &tb,
            &[
                "-N1",
                "-w",
                NODE,
                &format!("--image={id}"),
                &format!("--volume={d}:/v{opts}"),
                "sh",
                "-c",
                "ls /v/covered; touch /v/covered/new; echo touch=$?",
            ],
        );
        r.assert_ok();
        assert!(
            !r.stdout.contains("hidden-by-the-site"),
            "volume {opts:?} uncovered what the host's submount hides: {r}"
        );
        assert!(r.stdout.contains("visible-on-the-host"), "{r}");
        let want = if opts.is_empty() {
            "touch=0"
        } else {
            "touch=1"
        };
        assert!(
            r.stdout.contains(want),
            "volume {opts:?}, submount writes: {r}"
        );
    }
}

// ---- 6. the runtime's own mount points as image symlinks --------------------

/// `/proc`, `/sys`, `/dev` and `/tmp` are the runtime's own mounts: an image
/// that makes one of them a symlink onto a volume (a host directory of the
/// user's) would have root mount proc, sysfs or a tmpfs there, or bind device
/// nodes into it. They are opened beneath the overlay with no symlink
/// followed: the run is refused naming the path, through `srun` and the
/// setuid `shifter`, and the volume is untouched.
#[test]
fn image_symlinks_at_the_runtimes_own_mount_points_are_refused_by_name_and_leave_the_volume_alone()
{
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    for (name, path) in [
        ("proc-link", "/proc"),
        ("sys-link", "/sys"),
        ("dev-link", "/dev"),
        ("tmp-link", "/tmp"),
    ] {
        let Some(image) = attack_image(&tb, name) else {
            return;
        };
        let dir = Scratch::user_owned(&tb, name, &["sub"]);
        let file = dir.path().join("kept");
        std::fs::write(&file, "the user's file\n").unwrap();
        lchown(&file, Some(uid_of(tb.user())), Some(gid_of(tb.user()))).unwrap();
        let before = snapshot(dir.path());
        let volume = format!("--volume={}:/data", dir.show());
        let started = Instant::now();
        let (child, out) = spawn_shifter(&tb, &[&format!("--image={image}"), &volume, "/bin/true"]);
        let by_shifter = finish(child, &out, started, T);
        let by_srun = srun(
            &tb,
            &[
                "-N1",
                "-w",
                NODE,
                &format!("--image={image}"),
                &volume,
                "/bin/true",
            ],
        );
        for (how, r) in [("setuid shifter", &by_shifter), ("srun", &by_srun)] {
            r.assert_failed();
            let said = format!("{}{}", r.stdout, r.stderr);
            assert!(
                said.contains(path) && said.contains("plain directory"),
                "{how}: the refusal names {path} and the rule: {r}"
            );
        }
        assert_clean_refusal(&by_shifter);
        let after = snapshot(dir.path());
        assert!(
            diff(&before, &after).is_empty(),
            "{name}: {:?}",
            diff(&before, &after)
        );
    }
    tb.assert_no_cache_left();
}

/// The setuid `shifter` as the test user under `config` (bound over
/// `/etc/shifter/shifter.toml` in a private mount namespace of node n1: the
/// only config a setuid run reads).
fn setuid_shifter_with_config(tb: &Testbed, config: &Path, args: &[&str]) -> Run {
    let user = tb.user();
    let script = format!(
        "mount --bind '{}' /etc/shifter/shifter.toml && exec setpriv --reuid={} --regid={} --init-groups -- \"$@\"",
        config.display(),
        uid_of(user),
        gid_of(user)
    );
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["-k", "5", &T.as_secs().to_string()])
        .args(["nsenter", "-t", &slurmd_pid(tb, NODE), "-m", "--"])
        .args(["unshare", "-m", "--propagation", "private", "--"])
        .args(["sh", "-c", &script, "sh", &setuid_bin(tb)])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("USER", user)
        .current_dir(tb.workdir())
        .output()
        .expect("timeout/nsenter/unshare (coreutils, util-linux)");
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// A site mount of a directory the user writes, at a destination the image
/// makes a symlink to `/proc`: followed, the user's fake `/proc` (a
/// `cap_last_cap` of 0, a `status` with empty sets) would be what the
/// runtime reads afterwards. Site destinations never cross a mount, so the
/// run is refused naming the destination; the same config with an image
/// that has no such link runs, with an empty bounding set read from the real
/// `/proc`.
#[test]
fn a_site_mount_onto_an_image_symlink_to_proc_is_refused_so_no_fake_proc_is_read() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(image) = attack_image(&tb, "site-proc-link") else {
        return;
    };
    let Some(plain) = busybox(&tb) else { return };
    let fake = Scratch::user_owned(&tb, "fake-proc", &["sys", "sys/kernel", "self"]);
    let (uid, gid) = (uid_of(tb.user()), gid_of(tb.user()));
    for (rel, text) in [
        ("sys/kernel/cap_last_cap", "0\n"),
        ("self/status", "CapBnd:\t0000000000000000\nNoNewPrivs:\t1\n"),
    ] {
        let p = fake.path().join(rel);
        std::fs::write(&p, text).unwrap();
        lchown(&p, Some(uid), Some(gid)).unwrap();
    }
    let conf_dir = tb
        .dir
        .join(format!("attack-site-proc-conf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&conf_dir);
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conf = conf_dir.join("shifter.toml");
    let cluster = std::fs::read_to_string(tb.config_path()).unwrap();
    // [[site_fs]] before the first table, so it is a top-level array.
    let (head, tables) = cluster.split_at(cluster.find("\n[").map_or(cluster.len(), |i| i + 1));
    let site = format!(
        "[[site_fs]]\nsource = \"{}\"\ndestination = \"/sitefake\"\n\n",
        fake.show()
    );
    std::fs::write(&conf, format!("{head}\n{site}{tables}")).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();

    let r = setuid_shifter_with_config(
        &tb,
        &conf,
        &[&format!("--image={image}"), "/bin/cat", "/proc/self/status"],
    );
    r.assert_failed();
    assert!(
        r.stderr.contains("/sitefake"),
        "the refusal names the site destination: {r}"
    );
    assert!(!r.stdout.contains("CapBnd"), "the command ran: {r}");

    let ok = setuid_shifter_with_config(
        &tb,
        &conf,
        &[
            &format!("--image={plain}"),
            "/bin/cat",
            "/proc/self/status",
            "/sitefake/self/status",
        ],
    );
    ok.assert_ok();
    let bnd: Vec<&str> = ok
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("CapBnd:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        bnd, ["0000000000000000"; 2],
        "the real status, then the fake one: {ok}"
    );
    let _ = std::fs::remove_dir_all(&conf_dir);
}
