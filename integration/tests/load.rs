//! Load, end to end and bounded (issue 7, "Load"): the cluster's gateway under 200
//! concurrent authenticated lookups for 30 s, 50 concurrent pulls of 5 images each
//! converted once by a test-owned gateway, and 100 back-to-back two-node `srun
//! --image` steps leaving no mount or loop device behind. Loopback only; about
//! 2–3 minutes. The tests take turns so each one's figures are its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shifter_api::ImageRef;
use shifter_integration::slurm::serial;
use shifter_integration::{report, Gateway, GatewayOptions, Run, Testbed};

const LOOKUP_CLIENTS: usize = 200;
const LOOKUP_FOR: Duration = Duration::from_secs(30);
const PULLERS: usize = 50;
const STEPS: usize = 100;

fn shifterimg(tb: &Testbed, args: &[&str]) -> Run {
    // Fifty at once share two cores: each may wait long for its turn.
    tb.shifterimg_within(tb.user(), args, Duration::from_secs(240))
}

fn image(tb: &Testbed, repo_tag: &str) -> String {
    format!("docker:{}/{repo_tag}", tb.registry())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

// ---------------------------------------------------------------------------

#[derive(Default)]
struct LookupTally {
    latencies: Vec<Duration>,
    errors: usize,
    first_errors: Vec<String>,
}

#[test]
fn gateway_answers_200_concurrent_lookups_with_fresh_credentials_for_30s_without_error() {
    let Some(tb) = Testbed::get() else { return };
    let _turn = serial();
    let reference = image(&tb, "busybox:latest");
    shifterimg(&tb, &["pull", &reference]).assert_ok();
    let parsed = ImageRef::parse(&reference).unwrap();
    let url = format!(
        "{}/api/lookup/{}/{}/",
        tb.var("SHIFTER_GATEWAY"),
        tb.var("SHIFTER_GW_SYSTEM"),
        parsed.url_path()
    );
    let socket = PathBuf::from(tb.var("SHIFTER_MUNGE_SOCKET"));
    // Every credential bound to the lookup (the gateway refuses others).
    let target = url
        .split_once("//")
        .and_then(|(_, r)| r.find('/').map(|i| &r[i..]));
    let payload = Arc::new(shifter_api::credential::request_payload(
        "GET",
        target.expect("gateway URL with a path"),
        b"",
    ));
    let tally = Arc::new(Mutex::new(LookupTally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..LOOKUP_CLIENTS)
        .map(|_| {
            let (url, socket, tally, stop, payload) = (
                url.clone(),
                socket.clone(),
                tally.clone(),
                stop.clone(),
                payload.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(20))
                    .build();
                let mut mine = LookupTally::default();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    // A fresh credential every time: the gateway refuses replays.
                    let outcome = munge_sys::encode(payload.as_bytes(), Some(&socket))
                        .map_err(|e| format!("munge encode: {e}"))
                        .and_then(|cred| {
                            agent
                                .get(&url)
                                .set("authentication", &cred)
                                .call()
                                .map_err(|e| format!("lookup: {e}"))
                        })
                        .and_then(|resp| {
                            let body: serde_json::Value =
                                resp.into_json().map_err(|e| format!("lookup body: {e}"))?;
                            match body["status"].as_str() {
                                Some("READY") => Ok(()),
                                other => Err(format!("lookup status {other:?}")),
                            }
                        });
                    match outcome {
                        Ok(()) => mine.latencies.push(t.elapsed()),
                        Err(e) => {
                            mine.errors += 1;
                            if mine.first_errors.len() < 3 {
                                mine.first_errors.push(e);
                            }
                        }
                    }
                }
                let mut all = tally.lock().unwrap();
                all.latencies.extend(mine.latencies);
                all.errors += mine.errors;
                all.first_errors.extend(mine.first_errors);
            })
        })
        .collect();
    std::thread::sleep(LOOKUP_FOR);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a lookup client panicked");
    }
    let elapsed = start.elapsed();
    let mut tally = tally.lock().unwrap();
    tally.latencies.sort();
    let ok = tally.latencies.len();
    eprintln!(
        "LOAD lookups: {LOOKUP_CLIENTS} clients for {elapsed:.1?}: {ok} ok, {} errors, {:.0} requests/s, p50 {:?}, p99 {:?}, max {:?}",
        tally.errors,
        ok as f64 / elapsed.as_secs_f64(),
        percentile(&tally.latencies, 0.50),
        percentile(&tally.latencies, 0.99),
        tally.latencies.last().copied().unwrap_or_default(),
    );
    let tried = (ok + tally.errors) as u64;
    let check = format!(
        "{LOOKUP_CLIENTS} concurrent lookups for {}s",
        LOOKUP_FOR.as_secs()
    );
    report::figure("load", &check, tried, ok as u64, tally.errors as u64);
    assert_eq!(
        tally.errors,
        0,
        "lookups failed under load, first errors: {:?}",
        &tally.first_errors[..tally.first_errors.len().min(10)]
    );
    assert!(
        ok >= LOOKUP_CLIENTS,
        "only {ok} lookups finished in {elapsed:?}: clients were starved"
    );
}

// ---------------------------------------------------------------------------

fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

#[test]
fn fifty_concurrent_pulls_of_five_images_convert_each_image_exactly_once() {
    let Some(tb) = Testbed::get() else { return };
    let _turn = serial();
    // Its own gateway, with an empty image directory and blob cache, so "converted
    // once" shows in its counters and files.
    let gw = Gateway::start(&tb, "load", GatewayOptions::default());
    let images: Vec<String> = [
        "busybox:latest",
        "busybox:oci",
        "layered:latest",
        "layered:oci",
        "multi:latest",
    ]
    .iter()
    .map(|t| image(&tb, t))
    .collect();
    let start = Instant::now();
    let pullers: Vec<_> = (0..PULLERS)
        .map(|i| {
            let (tb, url, reference) = (tb.clone(), gw.url(""), images[i % images.len()].clone());
            std::thread::spawn(move || {
                let r = shifterimg(&tb, &["--gateway", &url, "pull", &reference]);
                (reference, r)
            })
        })
        .collect();
    let results: Vec<(String, Run)> = pullers.into_iter().map(|p| p.join().unwrap()).collect();
    let elapsed = start.elapsed();
    for (reference, r) in &results {
        assert!(
            r.success(),
            "pull of {reference} failed: {r}\ngateway log:\n{}",
            gw.log()
        );
        assert!(
            r.stdout.contains("READY"),
            "pull of {reference} did not end READY: {r}"
        );
    }
    let started = gw.metric("pull_jobs_started_total");
    let ready = gw.metric("pulls_total{status=\"READY\"}");
    let failed = gw.metric("pulls_total{status=\"FAILURE\"}");
    let images_dir = gw.images();
    let sqfs = files_ending(&images_dir, ".squashfs");
    let metas = files_ending(&images_dir, ".json");
    eprintln!(
        "LOAD pulls: {PULLERS} concurrent pulls of {} images in {elapsed:.1?}: {started} pull jobs, {ready} READY, {failed} FAILURE, {} squashfs files",
        images.len(),
        sqfs.len()
    );
    // Lost: a pull that did not end READY, or a conversion too many or missing.
    let lost = failed as u64 + (started as u64).abs_diff(5) + (sqfs.len() as u64).abs_diff(5);
    let check = format!("{PULLERS} concurrent pulls of 5 images, 5 conversions");
    report::figure("load", &check, PULLERS as u64, PULLERS as u64, lost);
    assert_eq!(
        started,
        5.0,
        "each image is converted by one job:\n{}",
        gw.log()
    );
    assert_eq!(ready, 5.0, "{}", gw.log());
    assert_eq!(failed, 0.0, "{}", gw.log());
    assert_eq!(sqfs.len(), 5, "one squashfs per image: {sqfs:?}");
    assert_eq!(metas.len(), 5, "one meta per image: {metas:?}");
    let leftovers: Vec<String> = std::fs::read_dir(&images_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".squashfs") && !n.ends_with(".json"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "staging files left behind: {leftovers:?}"
    );
}

// ---------------------------------------------------------------------------

fn mount_count(pid: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/mountinfo: {e}"))
        .lines()
        .count()
}

/// Mounts on the host and in each node's namespace, and attached loop devices.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Footprint {
    host_mounts: usize,
    node_mounts: Vec<(String, usize)>,
    loops: usize,
}

fn footprint(tb: &Testbed) -> Footprint {
    let node_mounts = tb
        .nodes()
        .into_iter()
        .map(|n| {
            let pidfile = tb.dir.join(format!("pids/slurmd-{n}.pid"));
            let pid = std::fs::read_to_string(&pidfile)
                .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
            let count = mount_count(pid.trim());
            (n, count)
        })
        .collect();
    Footprint {
        host_mounts: mount_count("self"),
        node_mounts,
        loops: Testbed::loop_devices_backed_by(Path::new(tb.var("SHIFTER_IMAGE_DIR"))).len(),
    }
}

#[test]
fn hundred_two_node_image_steps_leave_no_mount_or_loop_device() {
    let Some(tb) = Testbed::get() else { return };
    let _turn = serial();
    let reference = image(&tb, "busybox:latest");
    shifterimg(&tb, &["pull", &reference]).assert_ok();
    assert!(
        tb.wait_queue_empty(Duration::from_secs(60)),
        "the queue did not drain"
    );
    let before = footprint(&tb);
    let image_arg = format!("--image={reference}");
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    for step in 0..STEPS {
        let r = tb.run_as(
            tb.user(),
            &[
                "srun",
                "-N2",
                "-n2",
                &image_arg,
                "/bin/sh",
                "-c",
                "grep ^ID= /etc/os-release",
            ],
            Duration::from_secs(60),
        );
        assert!(r.success(), "step {step} of {STEPS} failed: {r}");
        let seen = r.stdout.matches("ID=shifter-busybox").count();
        assert_eq!(seen, 2, "step {step}: both tasks run in the image: {r}");
        slowest = slowest.max(r.elapsed);
    }
    let elapsed = start.elapsed();
    // Steps end asynchronously on the nodes; give the last one's teardown a moment
    // before calling anything a leak.
    let mut after = footprint(&tb);
    let settled = Testbed::wait_until(Duration::from_secs(15), || {
        after = footprint(&tb);
        after == before
    });
    eprintln!(
        "LOAD steps: {STEPS} x srun -N2 --image in {elapsed:.1?} ({:.2} s/step, slowest {slowest:.2?}); before {before:?}, after {after:?}",
        elapsed.as_secs_f64() / STEPS as f64
    );
    let leaked = |a: usize, b: usize| a.saturating_sub(b) as u64;
    let lost = leaked(after.host_mounts, before.host_mounts)
        + after
            .node_mounts
            .iter()
            .zip(&before.node_mounts)
            .map(|(a, b)| leaked(a.1, b.1))
            .sum::<u64>()
        + leaked(after.loops, before.loops);
    let check = format!("{STEPS} srun -N2 --image steps, mounts+loops leaked");
    report::figure("load", &check, STEPS as u64, STEPS as u64, lost);
    assert!(
        settled,
        "mounts or loop devices leaked over {STEPS} steps: before {before:?}, after {after:?}"
    );
}
