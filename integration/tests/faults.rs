//! End-to-end faults (issue 7): what a site sees when the gateway is killed at
//! each pull phase, its disks fill up, munged goes away, or its SQLite store is
//! killed mid-write. Every test owns its gateway (own port, config, store and
//! directories under `$SHIFTER_TB/gw-faults-*`) and, where needed, its own munged
//! and tmpfs, so the cluster's gateway and the system munged are never touched.
//!
//! Already covered elsewhere and not repeated here: a single `kill -9` mid-pull
//! and SIGTERM (gateway.rs), hostile layers (hostile.rs), `scancel` (plugin.rs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shifter_integration::{
    chown, free_port, gid_of, image_path, report, Gateway, GatewayOptions, Testbed,
};

const T: Duration = Duration::from_secs(20);

/// Longer than the gateway's repeat-pull window (10 s), after which a pull of a
/// tag that just finished starts over instead of returning the last result.
const REPEAT_WINDOW: Duration = Duration::from_secs(11);

fn start(tb: &Testbed, name: &str, opts: GatewayOptions) -> Gateway {
    Gateway::start(tb, &format!("faults-{name}"), opts)
}

/// `PRAGMA integrity_check` of the gateway's SQLite store.
fn integrity_check(gw: &Gateway) -> String {
    // As the gateway account: opening a WAL database may create -wal/-shm
    // files, which must not end up owned by root.
    let db = gw.db().display().to_string();
    let r = gw.tb.run_as(
        gw.tb.var("SHIFTER_GW_USER"),
        &["sqlite3", &db, "PRAGMA integrity_check"],
        T,
    );
    r.assert_ok();
    r.stdout.trim().to_owned()
}

/// A size-capped tmpfs mounted by the test, unmounted when dropped (also on
/// a failed assertion).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str, owner: &str) -> Tmpfs {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(at)
            .stderr(Stdio::null())
            .status();
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("tmpfs")
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", at.display());
        let t = Tmpfs(at.to_owned());
        chown(owner, at);
        t
    }

    /// Takes every free byte, as root, in a file the gateway does not know.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(Stdio::null())
            .status();
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        let avail = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            avail.lines().nth(1).map(str::trim),
            Some("0"),
            "{} still has room",
            self.0.display()
        );
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A munged of our own (own key and socket), started and stopped by the test.
struct Munged {
    dir: PathBuf,
    child: Option<Child>,
}

impl Munged {
    fn new(dir: PathBuf) -> Option<Munged> {
        if !Path::new("/usr/sbin/munged").exists() {
            test_skip::skip(
                "faults: private munged",
                "/usr/sbin/munged is not installed",
            );
            return None;
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        // munged wants every directory above its socket searchable by all.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let st = Command::new("mungekey")
            .args(["--create", "--keyfile"])
            .arg(dir.join("munge.key"))
            .status()
            .unwrap();
        assert!(st.success(), "mungekey --create");
        let mut m = Munged { dir, child: None };
        m.start();
        Some(m)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("munge.socket")
    }

    fn start(&mut self) {
        let d = &self.dir;
        let log = std::fs::File::create(d.join("munged.out")).unwrap();
        let child = Command::new("/usr/sbin/munged")
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--key-file={}", d.join("munge.key").display()))
            .arg(format!("--pid-file={}", d.join("munged.pid").display()))
            .arg(format!("--seed-file={}", d.join("munged.seed").display()))
            .arg(format!("--log-file={}", d.join("munged.log").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start munged");
        self.child = Some(child);
        let sock = self.socket();
        let up = Testbed::wait_until(Duration::from_secs(10), || {
            Command::new("munge")
                .args(["-n", "-S"])
                .arg(&sock)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        });
        assert!(up, "private munged did not answer at {}", sock.display());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Munged {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn munged_stopped_gives_503_with_a_message_and_the_gateway_recovers_when_it_returns() {
    let Some(tb) = Testbed::get() else {
        return;
    };
    let Some(mut munged) = Munged::new(tb.dir.join("faults-private-munged")) else {
        return;
    };
    let gw = start(
        &tb,
        "munged",
        GatewayOptions {
            munge_socket: Some(munged.socket()),
            ..GatewayOptions::default()
        },
    );
    let user = tb.user().to_owned();
    let (st, v) = gw.as_user(&user, "GET", "/api/list/testbed/", None);
    assert_eq!(st, 200, "with munged up: {v}\n{}", gw.log_tail());

    // A valid credential, made while munged still ran, that nobody could decode.
    let cred = gw.cred_for(&user, "GET", "/api/list/testbed/", None);
    munged.stop();
    let (st, v) = gw.call("GET", "/api/list/testbed/", Some(&cred), None);
    assert_eq!(st, 503, "with munged down: {v}\n{}", gw.log_tail());
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(msg.contains("munge"), "the 503 says why: {v}");
    // Health is about the gateway itself; it must not report munged's outage as a crash.
    let (st, _) = gw.call("GET", "/healthz", None, None);
    assert_eq!(st, 200);

    munged.start();
    let (st, v) = gw.call("GET", "/api/list/testbed/", Some(&cred), None);
    assert_eq!(
        st,
        200,
        "the credential made before the outage works once munged is back: {v}\n{}",
        gw.log_tail()
    );
    let (st, v) = gw.as_user(&user, "GET", "/api/list/testbed/", None);
    assert_eq!(st, 200, "a fresh credential after recovery: {v}");
    report::figure("faults", "munged stopped: 503, then recovered", 1, 1, 0);
}

/// Fills the tmpfs under `which` ("images" or "cache") after one READY pull,
/// then checks the next pull fails cleanly, lookups still work, and a retry
/// after freeing space succeeds.
fn disk_full(which: &str) {
    let Some(tb) = Testbed::get() else {
        return;
    };
    let gw_user = tb.var("SHIFTER_GW_USER").to_owned();
    let name = format!("full-{which}");
    let fs = Tmpfs::mount(&tb.dir.join(format!("faults-{name}-fs")), "16m", &gw_user);
    let target = fs.0.join(which);
    std::fs::create_dir_all(&target).unwrap();
    chown(&gw_user, &target);
    let mut opts = GatewayOptions::default();
    if which == "images" {
        opts.images = Some(target.clone());
    } else {
        opts.cache = Some(target.clone());
    }
    let gw = start(&tb, &name, opts);
    let user = tb.user().to_owned();

    let ready = image_path(&tb, "busybox:latest");
    let rec = gw.pull_until_final(&user, &ready, None);
    assert_eq!(rec["status"], "READY", "{rec}\n{}", gw.log_tail());
    let before = gw.files();

    let filler = fs.fill();
    let next = image_path(&tb, "layered:oci");
    let rec = gw.pull_until_final(&user, &next, None);
    assert_eq!(
        rec["status"],
        "FAILURE",
        "full {which}: {rec}\n{}",
        gw.log_tail()
    );
    let msg = rec["status_message"].as_str().unwrap_or_default();
    assert!(
        msg.to_lowercase().contains("no space"),
        "the failure names the full disk: {rec}"
    );
    gw.assert_nothing_half_written();
    assert_eq!(gw.files(), before, "nothing new in the image dir");
    let (st, v) = gw.lookup(&user, &ready);
    assert_eq!(st, 200, "a READY image is still served: {v}");
    assert_eq!(v["status"], "READY", "{v}");

    std::fs::remove_file(filler).unwrap();
    std::thread::sleep(REPEAT_WINDOW);
    let rec = gw.pull_until_final(&user, &next, None);
    assert_eq!(
        rec["status"],
        "READY",
        "retry with room again: {rec}\n{}",
        gw.log_tail()
    );
    gw.assert_nothing_half_written();
    drop(gw);
    report::figure(
        "faults",
        &format!("{which} dir full: clean FAILURE, recovered"),
        1,
        1,
        0,
    );
}

#[test]
fn full_image_dir_fails_the_pull_cleanly_and_ready_images_stay_served() {
    disk_full("images");
}

#[test]
fn full_blob_cache_fails_the_pull_cleanly_and_ready_images_stay_served() {
    disk_full("cache");
}

/// The status the store holds for `tag`, read with the gateway stopped
/// (SIGSTOP) so what is read is the phase the process is in right now.
fn stored_status(gw: &Gateway, tag: &str) -> String {
    let gw_user = gw.tb.var("SHIFTER_GW_USER");
    let out = Command::new("setpriv")
        .arg(format!("--reuid={gw_user}"))
        .arg(format!("--regid={}", gid_of(gw_user)))
        .arg("--init-groups")
        .arg("sqlite3")
        .arg(gw.db())
        .arg(format!("SELECT status FROM images WHERE tag = '{tag}'"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

/// SIGSTOP, then waits until every thread of `pid` has really stopped: kill(2)
/// returns before threads running on another core are stopped, and a status read
/// in between could miss a write the gateway was still making.
fn stop(pid: u32) {
    signal(pid, "-STOP");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return;
        };
        let all_stopped = tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).map_or(true, |stat| {
                // The state follows the parenthesised command name.
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                state.starts_with('T') || state.starts_with('t')
            })
        });
        if all_stopped {
            return;
        }
        std::thread::yield_now();
    }
}

#[test]
fn kill_9_at_each_pull_phase_leaves_no_partial_file_and_a_retry_succeeds() {
    let Some(tb) = Testbed::get() else {
        return;
    };
    let mut gw = start(&tb, "phases", GatewayOptions::default());
    let user = tb.user().to_owned();
    // One image per phase so no pull joins or repeats another's result.
    // Each phase gets the next unused image, so no pull joins or repeats an
    // earlier one; a phase missed by the sampling is tried again on another.
    // TRANSFER lasts a few milliseconds: on a loaded machine several pulls
    // may pass it between two samples, so every small image of the
    // registry is a candidate.
    let attack_images = tb.var_opt("SHIFTER_ATTACK_IMAGES").unwrap_or_default();
    let mut unused = vec![
        "layered:latest",
        "layered:oci",
        "multi:latest",
        "multi:dockerlist",
        "busybox:oci",
        "busybox:latest",
    ];
    unused.extend(attack_images.split_whitespace());
    let phases = ["PULLING", "CONVERSION", "TRANSFER"];
    let mut tried = Vec::new();
    let mut hit = Vec::new();
    let mut next = 0;
    while next < phases.len() && !unused.is_empty() {
        let phase = phases[next];
        let img = unused.remove(0);
        tried.push(img);
        let path = image_path(&tb, img);
        let tag = format!("{}/{img}", tb.registry());
        gw.pull(&user, &path, None);
        let pid = gw.pid().unwrap();
        let start = Instant::now();
        let mut seen = None;
        while start.elapsed() < Duration::from_secs(60) {
            stop(pid);
            let s = stored_status(&gw, &tag);
            if s == phase {
                gw.kill_9();
                seen = Some(s);
                break;
            }
            signal(pid, "-CONT");
            // No sleep: the gateway runs only between SIGCONT and the next
            // SIGSTOP, so even the short TRANSFER phase is sampled.
            if s == "READY" || s == "FAILURE" {
                break;
            }
        }
        if seen.is_none() {
            gw.kill_9();
            eprintln!("(faults: {img} passed {phase} unseen; killed after)");
        } else {
            hit.push(phase);
            next += 1;
        }
        gw.spawn();
        gw.assert_nothing_half_written();
        if seen.is_some() {
            // Restart recovery marks the interrupted pull failed, whatever
            // part of its publish it reached.
            assert_eq!(
                stored_status(&gw, &tag),
                "FAILURE",
                "killed in {phase}, after restart"
            );
        }
        let rec = gw.pull(&user, &path, None);
        let status = rec["status"].as_str().unwrap_or_default();
        // Killed in TRANSFER, the squashfs may already have been renamed into
        // place (complete: the new state) with only the record's READY left
        // to write; the retry then keeps that image. Earlier phases publish
        // nothing, so their retry cannot be READY at once.
        if seen.is_some() && phase != "TRANSFER" {
            assert_ne!(status, "READY", "killed in {phase} yet published: {rec}");
        }
        if status == "FAILURE" {
            let msg = rec["status_message"].as_str().unwrap_or_default();
            assert!(msg.contains("restart"), "the failure says why: {rec}");
        }
    }
    assert!(
        hit == phases,
        "only {hit:?} caught: the pulls outran the sampling\n{}",
        gw.log_tail()
    );
    eprintln!("(faults: killed the gateway in phases {hit:?})");
    std::thread::sleep(REPEAT_WINDOW);
    for img in tried {
        let rec = gw.pull_until_final(&user, &image_path(&tb, img), None);
        assert_eq!(
            rec["status"],
            "READY",
            "retry of {img}: {rec}\n{}",
            gw.log_tail()
        );
    }
    gw.assert_nothing_half_written();
    let n = hit.len() as u64;
    report::figure(
        "faults",
        "gateway kill -9 per pull phase, retried READY",
        n,
        n,
        0,
    );
}

#[test]
fn sqlite_store_stays_consistent_when_the_gateway_is_killed_during_writes() {
    let Some(tb) = Testbed::get() else {
        return;
    };
    let mut gw = start(&tb, "sqlite-kill", GatewayOptions::default());
    let budget = Duration::from_secs(40);
    let start = Instant::now();
    let mut rounds = 0u32;
    while rounds < 100 && start.elapsed() < budget {
        let url = gw.url("/api/pull/testbed/");
        let registry = tb.registry().to_owned();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Writers: each pull of an unknown tag inserts a record and moves it
        // through PENDING, PULLING and FAILURE.
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (url, registry, stop) = (url.clone(), registry.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let tag = format!("{registry}/faults-missing:r{rounds}-w{w}-{n}")
                            .replace('/', "%2F")
                            .replace(':', "%3A");
                        let target = format!("/api/pull/testbed/docker/{tag}/");
                        let payload =
                            shifter_api::credential::request_payload("POST", &target, b"");
                        let out = Command::new("munge")
                            .args(["-s", &payload])
                            .output()
                            .unwrap();
                        let cred = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                        let _ = ureq::post(&format!("{url}docker/{tag}/"))
                            .timeout(Duration::from_secs(2))
                            .set("authentication", &cred)
                            .call();
                        n += 1;
                    }
                })
            })
            .collect();
        // Vary where in the writes the kill lands.
        std::thread::sleep(Duration::from_millis(100 + u64::from(rounds * 37 % 400)));
        gw.kill_9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(
            integrity_check(&gw),
            "ok",
            "after kill {rounds}\n{}",
            gw.log_tail()
        );
        gw.spawn();
        let (st, v) = gw.as_user("root", "GET", "/api/list/testbed/", None);
        assert_eq!(st, 200, "list after kill {rounds}: {v}\n{}", gw.log_tail());
        assert!(v["list"].is_array(), "{v}");
        rounds += 1;
    }
    // The writes really happened: the store holds the records of the pulls.
    let db = gw.db().display().to_string();
    let r = tb.run_as(
        tb.var("SHIFTER_GW_USER"),
        &["sqlite3", &db, "SELECT count(*) FROM images"],
        T,
    );
    r.assert_ok();
    let records: u64 = r.stdout.trim().parse().unwrap();
    eprintln!("(faults: store survived {rounds} kills during writes; {records} records)");
    // Each round's writes leave at least one record; fewer would be writes lost.
    let lost = u64::from(rounds).saturating_sub(records);
    report::figure(
        "faults",
        "SQLite store: gateway kill -9 during writes",
        rounds.into(),
        rounds.into(),
        lost,
    );
    assert!(
        records >= u64::from(rounds),
        "{records} records after {rounds} rounds"
    );
    assert!(rounds >= 20, "only {rounds} kills fit in {budget:?}");
}

/// The cluster's busybox image pinned as `id:<hex>`, pulled through the
/// cluster's gateway (which the tests never stop).
fn pinned_busybox(tb: &Testbed) -> String {
    let bin = tb.bin_dir().join("shifterimg");
    let bin = bin.to_str().unwrap();
    let cfg = tb.var("SHIFTER_CONFIG").to_owned();
    let image = format!("docker:{}/busybox:latest", tb.registry());
    let long = Duration::from_secs(180);
    tb.run_as(tb.user(), &[bin, "--config", &cfg, "pull", &image], long)
        .assert_ok();
    let r = tb.run_as(tb.user(), &[bin, "--config", &cfg, "lookup", &image], T);
    r.assert_ok();
    let hex = r.stdout.trim().rsplit(':').next().unwrap().to_owned();
    assert_eq!(hex.len(), 64, "lookup printed {r}");
    format!("id:{hex}")
}

/// A slurm.conf for clients whose plugstack names a shifter.toml that lists
/// only gateways nobody listens on; returns it and the dead URLs.
fn dead_gateway_slurm_conf(tb: &Testbed) -> (PathBuf, Vec<String>) {
    let dir = tb.dir.join("faults-deadgw");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dead: Vec<String> = (0..2)
        .map(|_| format!("http://127.0.0.1:{}", free_port()))
        .collect();
    let cluster = std::fs::read_to_string(tb.var("SHIFTER_CONFIG")).unwrap();
    let list = dead
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg: String = cluster
        .lines()
        .map(|l| {
            if l.starts_with("gateways") {
                format!("gateways = [{list}]\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(
        cfg.contains(&dead[0]),
        "no gateways line in the cluster config"
    );
    let toml = dir.join("shifter.toml");
    std::fs::write(&toml, cfg).unwrap();
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o644)).unwrap();
    let plugstack = dir.join("plugstack.conf");
    std::fs::write(
        &plugstack,
        format!(
            "required {} config={}\n",
            tb.var("SHIFTER_PLUGIN"),
            toml.display()
        ),
    )
    .unwrap();
    let slurm: String = std::fs::read_to_string(tb.var("SLURM_CONF"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("PlugStackConfig=") {
                format!("PlugStackConfig={}\n", plugstack.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let conf = dir.join("slurm.conf");
    std::fs::write(&conf, slurm).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    (conf, dead)
}

#[test]
fn gateways_down_at_srun_fail_at_submit_naming_each_and_a_pinned_id_still_runs() {
    let Some(tb) = Testbed::get() else {
        return;
    };
    let pinned = pinned_busybox(&tb);
    let (conf, dead) = dead_gateway_slurm_conf(&tb);
    let conf = conf.display().to_string();
    let env = [("SLURM_CONF", conf.as_str())];
    let tag = format!("--image=docker:{}/busybox:latest", tb.registry());
    let r = tb.run_as_with_env(tb.user(), &["srun", "-N1", &tag, "true"], &env, T);
    r.assert_failed();
    for url in &dead {
        assert!(r.stderr.contains(url.as_str()), "{url} not named: {r}");
    }
    assert!(
        !r.stderr.contains("slurmstepd"),
        "the step reached a node instead of failing at submit: {r}"
    );
    assert!(r.elapsed < Duration::from_secs(30), "took {:?}", r.elapsed);

    // Submission of a pinned id needs no lookup, and the nodes read the image
    // store directly.
    let image = format!("--image={pinned}");
    let r = tb.run_as_with_env(
        tb.user(),
        &["srun", "-N1", &image, "cat", "/etc/os-release"],
        &env,
        Duration::from_secs(60),
    );
    r.assert_ok();
    assert!(r.stdout.contains("ID=shifter-busybox"), "{r}");
    report::figure(
        "faults",
        "all gateways down at srun: refused, pinned id runs",
        2,
        2,
        0,
    );
}

/// Everything a step of `job` could have left on the nodes: loop devices of
/// the image store, squashfs/overlay/nsfs mounts in a slurmd's mount table,
/// and processes of the job (a namespace lives only as long as one of these).
fn leftovers(tb: &Testbed, job: &str) -> Vec<String> {
    let mut left = Testbed::loop_devices_backed_by(Path::new(tb.var("SHIFTER_IMAGE_DIR")));
    let mount_root = tb.var("SHIFTER_MOUNT_ROOT");
    for node in tb.nodes() {
        let pid_file = tb.dir.join("pids").join(format!("slurmd-{node}.pid"));
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim()))
            .unwrap_or_else(|e| panic!("slurmd of {node} (pid {}): {e}", pid.trim()));
        for l in mounts.lines() {
            if l.contains("squashfs") || l.contains(" nsfs ") || l.contains(mount_root) {
                left.push(format!("{node}: {l}"));
            }
        }
    }
    let needle = format!("SLURM_JOB_ID={job}\0");
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(env) = std::fs::read(e.path().join("environ")) {
            if String::from_utf8_lossy(&env).contains(&needle) {
                left.push(format!(
                    "process {} of job {job}",
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    left
}

/// Starts `srun -w n1 --image=<pinned> sleep 60` in the background, waits for
/// the step's slurmstepd, applies `fault`, and checks nothing is left and the
/// next job on n1 works.
fn fault_mid_setup(tb: &Testbed, fault: &str) {
    let pinned = pinned_busybox(tb);
    let node = tb.nodes()[0].clone();
    let name = format!("faults-{fault}-{}", std::process::id());
    let mut srun = Command::new("runuser")
        .args([
            "-u",
            tb.user(),
            "--",
            "srun",
            "-N1",
            "-w",
            &node,
            "-J",
            &name,
        ])
        .arg(format!("--image={pinned}"))
        .args(["sleep", "60"])
        .env("SLURM_CONF", tb.var("SLURM_CONF"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut job = String::new();
    let mut stepd = None;
    let seen = Testbed::wait_until(Duration::from_secs(30), || {
        if job.is_empty() {
            let q = tb.run_root(&["squeue", "-h", "-n", &name, "-o", "%i"], T);
            job = q.stdout.trim().to_owned();
            if job.is_empty() {
                return false;
            }
        }
        let p = Command::new("pgrep")
            .args(["-f", &format!("^slurmstepd: \\[{job}\\.0\\]")])
            .output()
            .unwrap();
        stepd = String::from_utf8_lossy(&p.stdout)
            .lines()
            .next()
            .map(str::to_owned);
        stepd.is_some()
    });
    if !seen {
        let _ = srun.kill();
        if !job.is_empty() {
            tb.run_root(&["scancel", &job], T);
        }
        panic!("step of job {job:?} never started on {node}");
    }
    match fault {
        "kill9" => {
            let st = Command::new("kill")
                .args(["-9", stepd.as_deref().unwrap()])
                .status()
                .unwrap();
            assert!(st.success());
        }
        _ => {
            tb.run_root(&["scancel", &job], T).assert_ok();
        }
    }
    // srun notices the dead step; the job is then cleaned up by Slurm.
    let _ = Testbed::wait_until(Duration::from_secs(20), || {
        srun.try_wait().ok().flatten().is_some()
    });
    let _ = srun.kill();
    let _ = srun.wait();
    tb.run_root(&["scancel", &job], T);
    let mut left = Vec::new();
    let clean = Testbed::wait_until(Duration::from_secs(30), || {
        left = leftovers(tb, &job);
        left.is_empty()
    });
    assert!(clean, "after {fault} of job {job}: {left:#?}");

    let r = tb.run_as(
        tb.user(),
        &[
            "srun",
            "-N1",
            "-w",
            &node,
            &format!("--image={pinned}"),
            "cat",
            "/etc/os-release",
        ],
        Duration::from_secs(60),
    );
    r.assert_ok();
    assert!(
        r.stdout.contains("ID=shifter-busybox"),
        "next job on {node}: {r}"
    );
    report::figure(
        "faults",
        &format!("{fault} mid-setup: nothing left, node reusable"),
        1,
        1,
        0,
    );
}

#[test]
fn kill_9_of_slurmstepd_mid_setup_leaves_nothing_on_the_node() {
    let Some(tb) = Testbed::get() else {
        return;
    };
    fault_mid_setup(&tb, "kill9");
}

#[test]
fn scancel_mid_setup_leaves_nothing_on_the_node() {
    let Some(tb) = Testbed::get() else {
        return;
    };
    fault_mid_setup(&tb, "scancel");
}
