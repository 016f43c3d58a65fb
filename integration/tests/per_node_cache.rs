//! End-to-end tests of per-node caches (issue 8):
//! `--volume=DIR:/cache:perNodeCache=size=N` through real srun/sbatch on the
//! local cluster and through `shifter`, with real loop devices, mkfs.xfs and
//! xfs mounts. The cluster's `shifter.toml` offers `$SHIFTER_CACHE_DIR` with
//! `max_size = "1G"` (integration/cluster/up.d/20-runtime.sh).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shifter_integration::slurm::{assert_refused_at_submit, serial};
use shifter_integration::{uid_of, Run, Testbed};

const T: Duration = Duration::from_secs(120);
/// The smallest cache mkfs.xfs makes, so the tests write little.
const SIZE: &str = "300M";

fn srun(tb: &Testbed, args: &[&str]) -> Run {
    let mut all = vec!["srun"];
    all.extend_from_slice(args);
    tb.run_as(tb.user(), &all, T)
}

fn cache_dir(tb: &Testbed) -> PathBuf {
    PathBuf::from(tb.var("SHIFTER_CACHE_DIR"))
}

fn cache_volume(tb: &Testbed, opts: &str) -> String {
    format!(
        "--volume={}:/cache:perNodeCache={opts}",
        cache_dir(tb).display()
    )
}

/// The cluster's image, or None (a loud skip, or a failure in CI).
fn image(tb: &Testbed) -> Option<String> {
    tb.gateway()?;
    Some(format!("--image={}", tb.pulled("busybox:latest")))
}

#[test]
fn cache_is_writable_owned_by_the_user_and_mounted_nosuid_nodev_on_each_node() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(img) = image(&tb) else { return };
    let r = srun(
        &tb,
        &[
            "-N2",
            &img,
            &cache_volume(&tb, &format!("size={SIZE}")),
            "sh",
            "-c",
            "echo from-$SLURM_NODEID > /cache/f && echo owner=$(stat -c %u /cache) file=$(stat -c %u /cache/f) mode=$(stat -c %a /cache) && cat /cache/f && grep ' /cache ' /proc/self/mountinfo && df -k /cache | tail -1",
        ],
    );
    r.assert_ok();
    let uid = uid_of(tb.user());
    assert_eq!(
        r.stdout
            .matches(&format!("owner={uid} file={uid} mode=700"))
            .count(),
        2,
        "the cache or the file in it is not the user's on both nodes: {r}"
    );
    assert!(
        r.stdout.contains("from-0") && r.stdout.contains("from-1"),
        "{r}"
    );
    let mounts: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains(" /cache "))
        .collect();
    assert_eq!(mounts.len(), 2, "{r}");
    for m in mounts {
        let opts = m.split_whitespace().nth(5).unwrap();
        assert!(
            opts.split(',').any(|o| o == "nosuid") && opts.split(',').any(|o| o == "nodev"),
            "cache mounted without nosuid,nodev: {m}"
        );
        assert!(
            m.contains(" - xfs /dev/loop"),
            "not xfs on a loop device: {m}"
        );
    }
    // df's size column (1K blocks): at most the 300M asked for.
    for l in r.stdout.lines().filter(|l| l.starts_with("/dev/loop")) {
        let blocks: u64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(blocks <= 300 * 1024, "filesystem larger than asked: {l}");
    }
    tb.assert_no_cache_left();
}

#[test]
fn writing_past_the_size_fails_with_no_space_left() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(img) = image(&tb) else { return };
    let r = srun(
        &tb,
        &[
            "-N1",
            &img,
            &cache_volume(&tb, &format!("size={SIZE},fs=xfs,method=loop")),
            "sh",
            "-c",
            "dd if=/dev/zero of=/cache/big bs=1M count=400; echo dd-exit=$?; echo kib=$(du -k /cache/big | cut -f1)",
        ],
    );
    r.assert_ok();
    assert!(
        r.stderr.contains("No space left on device"),
        "writing 400M into a 300M cache did not hit ENOSPC: {r}"
    );
    assert!(!r.stdout.contains("dd-exit=0"), "{r}");
    let kib: u64 = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{r}"));
    assert!(kib < 300 * 1024, "{kib} KiB written into a 300M cache: {r}");
    tb.assert_no_cache_left();
}

#[test]
fn concurrent_jobs_on_one_node_each_see_only_their_own_cache() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(img) = image(&tb) else { return };
    let node = tb.nodes()[0].clone();
    let vol = cache_volume(&tb, &format!("size={SIZE}"));
    let script = "echo $SLURM_JOB_ID > /cache/job-$SLURM_JOB_ID; echo start=$(date +%s); sleep 3; echo end=$(date +%s); ls /cache";
    let runs: Vec<Run> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    srun(
                        &tb,
                        &["-N1", "-n1", "-w", &node, &img, &vol, "sh", "-c", script],
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let span = |r: &Run, key: &str| -> u64 {
        r.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{r}"))
    };
    for r in &runs {
        r.assert_ok();
        let listed: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("job-")).collect();
        assert_eq!(listed.len(), 1, "a job saw another job's cache: {r}");
    }
    // They really ran side by side on the node.
    let (a, b) = (&runs[0], &runs[1]);
    assert!(
        span(a, "start=") < span(b, "end=") && span(b, "start=") < span(a, "end="),
        "the two jobs did not overlap:\n{a}\n{b}"
    );
    tb.assert_no_cache_left();
}

#[test]
fn cancelled_job_leaves_no_loop_device_mount_or_file() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(img) = image(&tb) else { return };
    let out = tb.dir.join("out");
    let log = out.join(format!("cache-cancel-{}.out", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let script = format!(
        "srun -N2 {img} {} sh -c 'dd if=/dev/zero of=/cache/part bs=1M count=20 2>/dev/null; echo ready; sleep 120'",
        cache_volume(&tb, &format!("size={SIZE}"))
    );
    let r = tb.run_as(
        tb.user(),
        &[
            "sbatch",
            "-N2",
            "--parsable",
            &format!("--output={}", log.display()),
            "--wrap",
            &script,
        ],
        T,
    );
    r.assert_ok();
    let job = r.stdout.trim().to_owned();
    let dir = cache_dir(&tb);
    // While the step runs, each node's cache is a loop device of an already
    // unlinked file in the cache directory: what the check below must not find.
    let running = Testbed::wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("ready")
            .count()
            == 2
    });
    assert!(
        running,
        "step did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let live = Testbed::loop_devices_backed_by(&dir);
    assert_eq!(live.len(), 2, "one cache per node expected: {live:?}");
    assert!(live.iter().all(|l| l.ends_with("(deleted)")), "{live:?}");
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "the backing file's name outlived its attachment"
    );
    let started = Instant::now();
    tb.run_root(&["scancel", &job], Duration::from_secs(20))
        .assert_ok();
    tb.assert_no_cache_left();
    eprintln!("cache released {:?} after scancel", started.elapsed());
}

#[test]
fn bad_cache_requests_are_refused_at_submit_saying_what_to_change() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let img = format!("--image=id:{}", "c".repeat(64));
    for (opts, says) in [
        (
            "size=abc",
            "size \"abc\" is not a size such as 500M, 2G or 1T",
        ),
        ("size=2G", "size 2G is above the site's maximum of 1G"),
        ("size=1G,fs=ext4", "only fs=xfs"),
        ("size=100M", "below the xfs minimum of 300M"),
        ("fs=xfs", "size= is missing"),
    ] {
        let r = srun(&tb, &[&img, &cache_volume(&tb, opts), "true"]);
        assert_refused_at_submit(&r, says);
        assert!(r.stderr.contains("--volume="), "{r}");
    }
    let r = srun(
        &tb,
        &[&img, "--volume=/tmp:/cache:perNodeCache=size=1G", "true"],
    );
    assert_refused_at_submit(
        &r,
        "/tmp is not a cache directory of this system; use one of:",
    );
    let r = srun(
        &tb,
        &[
            &img,
            &format!(
                "--volume={}:/etc:perNodeCache=size=1G",
                cache_dir(&tb).display()
            ),
            "true",
        ],
    );
    assert_refused_at_submit(&r, "volume destination /etc is forbidden");
}

/// `shifter` as root on behalf of the test user, with the cluster's config.
fn shifter(tb: &Testbed, image: &str, args: &[&str]) -> Run {
    let bin = tb.bin_dir().join("shifter").display().to_string();
    let config = tb.config_path();
    let user = format!("--user={}", tb.user());
    let mut all: Vec<&str> = vec![&bin, "--config", &config, &user, image];
    all.extend_from_slice(args);
    tb.run_root(&all, T)
}

#[test]
fn shifter_command_gives_the_same_cache_and_refuses_the_same_mistakes() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(img) = image(&tb) else { return };
    let vol = cache_volume(&tb, &format!("size={SIZE}"));
    let r = shifter(
        &tb,
        &img,
        &[
            &vol,
            "sh",
            "-c",
            "id -u; touch /cache/x && stat -c %u /cache/x; grep ' /cache ' /proc/self/mountinfo; dd if=/dev/zero of=/cache/big bs=1M count=400",
        ],
    );
    let uid = uid_of(tb.user());
    assert!(
        r.stdout.lines().filter(|l| *l == uid.to_string()).count() == 2,
        "not run as the user or file not theirs: {r}"
    );
    assert!(r.stdout.contains("nosuid,nodev"), "{r}");
    assert!(r.stderr.contains("No space left on device"), "{r}");
    let r = shifter(&tb, &img, &[&cache_volume(&tb, "size=5G"), "true"]);
    r.assert_failed();
    assert!(
        r.stderr
            .contains("size 5G is above the site's maximum of 1G"),
        "{r}"
    );
    // shifter runs on the host: nothing of its cache may stay there.
    let dir = cache_dir(&tb);
    assert!(
        Testbed::wait_until(Duration::from_secs(10), || Testbed::loop_devices_backed_by(
            &dir
        )
        .is_empty()),
        "{:?}",
        Testbed::loop_devices_backed_by(&dir)
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
}

#[test]
fn concurrent_runs_of_one_user_never_hold_more_than_the_per_user_total() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let Some(img) = image(&tb) else { return };
    // The cluster allows 1G per cache and, by default, 4 × that per user: six
    // runs of 1G started at once may not all pass the count before any of
    // them has made its cache. Each holds its cache while it sleeps.
    const RUNS: usize = 6;
    const ALLOWED: usize = 4;
    let vol = cache_volume(&tb, "size=1G");
    let started = Instant::now();
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..RUNS)
            .map(|_| {
                let (tb, img, vol) = (&tb, &img, &vol);
                s.spawn(move || shifter(tb, img, &[vol, "sh", "-c", "sleep 8; echo held"]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let held: Vec<&Run> = runs.iter().filter(|r| r.success()).collect();
    let refused: Vec<&Run> = runs.iter().filter(|r| !r.success()).collect();
    eprintln!(
        "({RUNS} concurrent 1G caches in {:.1?}: {} held, {} refused)",
        started.elapsed(),
        held.len(),
        refused.len()
    );
    assert_eq!(
        held.len(),
        ALLOWED,
        "the per-user total (4G) admits exactly {ALLOWED} of {RUNS} concurrent 1G caches: {runs:#?}"
    );
    for r in &held {
        assert_eq!(r.stdout.trim(), "held", "{r}");
    }
    for r in &refused {
        assert!(
            r.stderr.contains("the site allows 4G per user"),
            "refused for another reason: {r}"
        );
    }
    tb.assert_no_cache_left();
}
