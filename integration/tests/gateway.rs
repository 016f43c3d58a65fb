//! End-to-end: the gateway process as the non-root gateway account, against the
//! cluster's real munged and registry. Each test starts its own gateway (own
//! port, config, store and image directory under `$SHIFTER_TB`) so it can
//! restart or `kill -9` it without disturbing the cluster's gateway.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{json, Value};
use shifter_integration::{
    free_port, image_path, registry, uid_of, Gateway, GatewayOptions, Testbed,
};

const T: Duration = Duration::from_secs(20);

/// A fresh gateway for test `name`, or None (after a loud notice) without a cluster.
fn start(name: &str) -> Option<Gateway> {
    start_with(name, None, None)
}

/// A gateway with another store URL and/or another (shared) image directory.
fn start_with(name: &str, store: Option<&str>, images: Option<&Path>) -> Option<Gateway> {
    let tb = Testbed::get()?;
    let opts = GatewayOptions {
        store: store.map(str::to_owned),
        images: images.map(Path::to_path_buf),
        ..GatewayOptions::default()
    };
    Some(Gateway::start(&tb, &format!("gwtest-{name}"), opts))
}

fn assert_published(dir: &Path, id: &str) {
    for ext in ["json", "squashfs"] {
        let p = dir.join(format!("{id}.{ext}"));
        assert!(p.is_file(), "{} missing", p.display());
    }
}

#[test]
fn every_test_image_reaches_ready_and_keeps_its_id_across_two_restarts() {
    let Some(mut gw) = start("ready") else {
        return;
    };
    let user = gw.tb.user().to_owned();
    let images: Vec<String> = gw
        .tb
        .var("SHIFTER_IMAGES")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(!images.is_empty());
    let mut ids = Vec::new();
    for img in &images {
        let path = image_path(&gw.tb, img);
        let rec = gw.pull_until_final(&user, &path, None);
        assert_eq!(rec["status"], "READY", "{img}: {rec}\n{}", gw.log());
        let id = rec["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 64, "{img}: {rec}");
        assert_published(&gw.images(), &id);
        ids.push((path, id));
    }
    // busybox:latest's id is the digest of the manifest the registry serves.
    let m = registry::get_manifest(gw.tb.registry(), "busybox", "latest").unwrap();
    let digest = registry::sha256_digest(&m.body);
    let busybox = ids
        .iter()
        .find(|(p, _)| p.ends_with("busybox%3Alatest"))
        .unwrap();
    assert_eq!(format!("sha256:{}", busybox.1), digest);

    for round in 0..2 {
        gw.restart();
        for (path, id) in &ids {
            let (st, v) = gw.as_user(&user, "GET", &format!("/api/lookup/testbed/{path}/"), None);
            assert_eq!(st, 200, "after restart {round}: {path}: {v}");
            assert_eq!(v["id"], id.as_str(), "after restart {round}: {path}");
        }
    }
}

#[test]
fn twenty_concurrent_pulls_of_one_tag_run_one_job() {
    let Some(gw) = start("concurrent") else {
        return;
    };
    let user = gw.tb.user().to_owned();
    let path = image_path(&gw.tb, "layered:latest");
    let target = format!("/api/pull/testbed/{path}/");
    let creds: Vec<String> = (0..20)
        .map(|_| gw.cred_for(&user, "POST", &target, None))
        .collect();
    let barrier = Arc::new(Barrier::new(creds.len()));
    let url = gw.url(&target);
    let threads: Vec<_> = creds
        .into_iter()
        .map(|c| {
            let (barrier, url) = (barrier.clone(), url.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = ureq::post(&url).set("authentication", &c).timeout(T).call();
                let resp = r.unwrap_or_else(|e| panic!("pull: {e}"));
                resp.into_json::<Value>().unwrap()
            })
        })
        .collect();
    for t in threads {
        let v = t.join().unwrap();
        assert!(v["status"].is_string(), "{v}");
    }
    let rec = gw.pull_until_final(&user, &path, None);
    assert_eq!(rec["status"], "READY", "{rec}");
    assert_eq!(
        gw.metric("shifter_imagegw_pull_jobs_started_total"),
        1.0,
        "{}",
        gw.log()
    );
    assert_eq!(
        gw.metric("shifter_imagegw_pulls_total{status=\"READY\"}"),
        1.0
    );
}

#[test]
fn replayed_expired_and_missing_credentials_are_refused() {
    let Some(gw) = start("auth") else {
        return;
    };
    let user = gw.tb.user().to_owned();
    let c = gw.cred_for(&user, "GET", "/api/list/testbed/", None);
    let (st, v) = gw.call("GET", "/api/list/testbed/", Some(&c), None);
    assert_eq!(st, 200, "{v}");
    let (st, v) = gw.call("GET", "/api/list/testbed/", Some(&c), None);
    assert_eq!(st, 401, "replayed: {v}");
    assert!(v["message"].as_str().unwrap().contains("replayed"), "{v}");

    let payload = shifter_integration::gateway::request_payload("GET", "/api/list/testbed/", None);
    let r = gw
        .tb
        .run_as(&user, &["munge", "-s", &payload, "-t", "1"], T);
    r.assert_ok();
    std::thread::sleep(Duration::from_millis(2500));
    let (st, v) = gw.call("GET", "/api/list/testbed/", Some(r.stdout.trim()), None);
    assert_eq!(st, 401, "expired: {v}");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");

    let (st, v) = gw.call("GET", "/api/list/testbed/", None, None);
    assert_eq!(st, 401, "missing: {v}");
    let (st, v) = gw.call("GET", "/api/list/testbed/", Some("not-a-credential"), None);
    assert_eq!(st, 401, "garbage: {v}");
    assert_eq!(v["error"], "unauthorized");
    assert!(
        !gw.log().contains(&c),
        "the gateway log must not contain credentials"
    );
}

#[test]
fn a_non_admin_cannot_expire_and_an_admin_removes_the_files() {
    let Some(gw) = start("expire") else {
        return;
    };
    let user = gw.tb.user().to_owned();
    let path = image_path(&gw.tb, "busybox:oci");
    let rec = gw.pull_until_final(&user, &path, None);
    assert_eq!(rec["status"], "READY", "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();
    let expire = format!("/api/expire/testbed/{path}/");
    let (st, v) = gw.as_user(&user, "GET", &expire, None);
    assert_eq!(st, 403, "{v}");
    assert_published(&gw.images(), &id);
    let (st, v) = gw.as_user(&user, "GET", "/api/autoexpire/testbed/", None);
    assert_eq!(st, 403, "{v}");

    let (st, v) = gw.as_user("root", "GET", &expire, None);
    assert_eq!(st, 200, "{v}");
    assert!(gw.files().is_empty(), "{:?}", gw.files());
    let (st, _) = gw.as_user(&user, "GET", &format!("/api/lookup/testbed/{path}/"), None);
    assert_eq!(st, 404);
}

/// Pushes a copy of busybox:oci whose manifest differs by an annotation, so
/// the ACL'd image has its own id and no other test shares it.
fn push_private_copy(tb: &Testbed, tag: &str) {
    let m = registry::get_manifest(tb.registry(), "busybox", "oci").unwrap();
    let mut v: Value = serde_json::from_slice(&m.body).unwrap();
    v["annotations"] = json!({"org.shifter-rs.test": tag});
    let url = format!("http://{}/v2/busybox/manifests/{tag}", tb.registry());
    ureq::put(&url)
        .set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .send_string(&v.to_string())
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
}

#[test]
fn an_acl_image_is_invisible_and_unusable_for_the_second_user() {
    let Some(gw) = start("acl") else {
        return;
    };
    let (user, user2) = (gw.tb.user().to_owned(), gw.tb.user2().to_owned());
    let tag = format!("gwtest-acl-{}", std::process::id());
    push_private_copy(&gw.tb, &tag);
    let path = image_path(&gw.tb, &format!("busybox:{tag}"));
    let uid = uid_of(&user);
    let body = json!({"allowed_uids": uid.to_string()});
    let rec = gw.pull_until_final(&user, &path, Some(&body));
    assert_eq!(rec["status"], "READY", "{rec}");
    let id = rec["id"].as_str().unwrap().to_owned();

    let lookup = format!("/api/lookup/testbed/{path}/");
    assert_eq!(gw.as_user(&user, "GET", &lookup, None).0, 200);
    let (st, v) = gw.as_user(&user2, "GET", &lookup, None);
    assert_eq!(st, 403, "{v}");
    let (st, _) = gw.as_user(
        &user2,
        "GET",
        &format!("/api/lookup/testbed/id/{id}/"),
        None,
    );
    assert_eq!(st, 403, "by id too");
    let (_, v) = gw.as_user(&user2, "GET", "/api/list/testbed/", None);
    assert!(!v.to_string().contains(&id), "listed for user2: {v}");
    let (_, v) = gw.as_user(&user, "GET", "/api/list/testbed/", None);
    assert!(v.to_string().contains(&id), "not listed for its owner: {v}");
    let (st, _) = gw.as_user(&user2, "POST", &format!("/api/pull/testbed/{path}/"), None);
    assert_eq!(st, 403, "user2 cannot re-pull it to make it public");

    // The runtime enforces the ACL from the files: private mode and the ACL in the meta.
    use std::os::unix::fs::PermissionsExt;
    for ext in ["json", "squashfs"] {
        let md = std::fs::metadata(gw.images().join(format!("{id}.{ext}"))).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600, "{ext}");
    }
    let meta: Value =
        serde_json::from_slice(&std::fs::read(gw.images().join(format!("{id}.json"))).unwrap())
            .unwrap();
    assert_eq!(meta["acl"]["uids"], json!([uid]), "{meta}");
}

#[test]
fn a_pull_of_an_unknown_tag_fails_naming_tag_and_registry() {
    let Some(gw) = start("unknown") else {
        return;
    };
    let user = gw.tb.user().to_owned();
    let path = image_path(&gw.tb, "busybox:no-such-tag");
    let rec = gw.pull_until_final(&user, &path, None);
    assert_eq!(rec["status"], "FAILURE", "{rec}");
    let msg = rec["status_message"].as_str().unwrap();
    assert!(msg.contains("no-such-tag"), "{msg}");
    assert!(msg.contains(gw.tb.registry()), "{msg}");
    assert!(gw.files().is_empty(), "{:?}", gw.files());
}

#[test]
fn kill_9_mid_pull_then_restart_leaves_no_partial_file_and_a_failure_status() {
    let Some(mut gw) = start("kill9") else {
        return;
    };
    let user = gw.tb.user().to_owned();
    let path = image_path(&gw.tb, "layered:oci");
    let (st, v) = gw.as_user(&user, "POST", &format!("/api/pull/testbed/{path}/"), None);
    assert_eq!(st, 200, "{v}");
    // Kill as soon as the job has a staging directory (or at once if it is quicker).
    let images = gw.images();
    Testbed::wait_until(Duration::from_secs(2), || {
        std::fs::read_dir(&images)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".staging"))
            })
            .unwrap_or(false)
    });
    gw.kill_9();
    gw.spawn();

    for f in gw.files() {
        assert!(
            !f.starts_with('.') && (f.ends_with(".json") || f.ends_with(".squashfs")),
            "leftover {f} after restart"
        );
    }
    // Whatever was published is complete: every squashfs has its meta.
    for f in gw.files().iter().filter(|f| f.ends_with(".squashfs")) {
        assert!(
            gw.images().join(f.replace(".squashfs", ".json")).exists(),
            "{f} without meta"
        );
    }
    let (st, v) = gw.as_user(&user, "POST", &format!("/api/pull/testbed/{path}/"), None);
    assert_eq!(st, 200);
    if gw.files().is_empty() {
        assert_eq!(v["status"], "FAILURE", "{v}");
        assert!(
            v["status_message"].as_str().unwrap().contains("restart"),
            "{v}"
        );
    }
    // And pulling again works.
    std::thread::sleep(Duration::from_secs(10));
    let rec = gw.pull_until_final(&user, &path, None);
    assert_eq!(rec["status"], "READY", "{rec}\n{}", gw.log());
}

#[test]
fn import_publishes_a_squashfs_the_caller_can_read_and_refuses_one_they_cannot() {
    let Some(gw) = start("import") else {
        return;
    };
    let (user, user2) = (gw.tb.user().to_owned(), gw.tb.user2().to_owned());
    let work = gw
        .tb
        .workdir()
        .join(format!("gw-import-{}", std::process::id()));
    let script = format!(
        "set -e; mkdir -p {w}/src; echo site > {w}/src/hello; \
         mksquashfs {w}/src {w}/site.sqfs -noappend -quiet >/dev/null; chmod 0644 {w}/site.sqfs; \
         echo junk > {w}/junk.sqfs; chmod 0644 {w}/junk.sqfs",
        w = work.display()
    );
    gw.tb.run_as(&user, &["sh", "-c", &script], T).assert_ok();
    let file = work.join("site.sqfs");
    let body = json!({"filepath": file.to_str().unwrap(), "format": "squashfs"});
    let (st, v) = gw.as_user(
        &user,
        "POST",
        "/api/doimport/testbed/custom/gwtest-site/",
        Some(&body),
    );
    assert_eq!(st, 200, "{v}\n{}", gw.log());
    let bytes = std::fs::read(&file).unwrap();
    let id = registry::sha256_digest(&bytes);
    assert_eq!(
        format!("sha256:{}", v["id"].as_str().unwrap()),
        id,
        "id is the file's sha256"
    );
    let (st, v) = gw.as_user(
        &user2,
        "GET",
        "/api/lookup/testbed/custom/gwtest-site/",
        None,
    );
    assert_eq!(st, 200, "{v}");
    let hex = id.trim_start_matches("sha256:");
    assert_eq!(
        std::fs::read(gw.images().join(format!("{hex}.squashfs"))).unwrap(),
        bytes
    );

    let junk = json!({"filepath": work.join("junk.sqfs").to_str().unwrap()});
    let (st, v) = gw.as_user(
        &user,
        "POST",
        "/api/doimport/testbed/custom/gwtest-junk/",
        Some(&junk),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("squashfs"), "{v}");

    // Readable by the gateway's group but not by user2: refused for user2.
    let gw_user = gw.tb.var("SHIFTER_GW_USER").to_owned();
    let f = file.to_str().unwrap();
    gw.tb.run_root(&["chgrp", &gw_user, f], T).assert_ok();
    gw.tb.run_root(&["chmod", "0640", f], T).assert_ok();
    let (st, v) = gw.as_user(
        &user2,
        "POST",
        "/api/doimport/testbed/custom/gwtest-stolen/",
        Some(&body),
    );
    assert_eq!(st, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("may not read"),
        "{v}"
    );
    let (st, _) = gw.as_user(
        &user2,
        "GET",
        "/api/lookup/testbed/custom/gwtest-stolen/",
        None,
    );
    assert_eq!(st, 404);
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn sigterm_mid_pull_lets_the_pull_finish_before_exiting() {
    let Some(mut gw) = start("sigterm") else {
        return;
    };
    let user = gw.tb.user().to_owned();
    let path = image_path(&gw.tb, "multi:latest");
    let (st, v) = gw.as_user(&user, "POST", &format!("/api/pull/testbed/{path}/"), None);
    assert_eq!(st, 200, "{v}");
    gw.stop();
    assert!(gw.log().contains("SIGTERM"), "{}", gw.log());
    gw.spawn();
    let (st, v) = gw.as_user(&user, "GET", &format!("/api/lookup/testbed/{path}/"), None);
    assert_eq!(
        st,
        200,
        "the pull finished during the grace period: {v}\n{}",
        gw.log()
    );
    assert!(
        gw.files().iter().all(|f| !f.starts_with('.')),
        "{:?}",
        gw.files()
    );
}

/// A PostgreSQL server of its own (data and socket under `dir`, a private
/// loopback port), run as the `postgres` account; stopped on drop.
struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    fn start(dir: &Path) -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .find(|b| b.join("initdb").exists())
        });
        let Some(bin) = bin else {
            test_skip::skip(
                "postgres gateway test",
                "PostgreSQL is not installed (Debian package postgresql)",
            );
            return None;
        };
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        assert!(Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir)
            .status()
            .unwrap()
            .success());
        let data = dir.join("data");
        let as_pg = |args: &[&str]| {
            let out = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let initdb = bin.join("initdb");
        as_pg(&[
            initdb.to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            dir.display()
        );
        let log = dir.join("server.log");
        let pg_ctl = bin.join("pg_ctl");
        as_pg(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-o",
            &opts,
            "-w",
            "start",
        ]);
        Some(Postgres {
            dir: dir.to_owned(),
            bin,
            port,
        })
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ])
            .output();
    }
}

#[test]
fn two_replicas_sharing_postgres_and_an_image_dir_agree() {
    let Some(tb) = Testbed::get() else { return };
    let Some(pg) = Postgres::start(&tb.dir.join("gwtest-postgres-db")) else {
        return;
    };
    let Some(a) = start_with("pg-a", Some(&pg.url()), None) else {
        return;
    };
    let shared = a.images();
    let Some(mut b) = start_with("pg-b", Some(&pg.url()), Some(&shared)) else {
        return;
    };
    let user = a.tb.user().to_owned();
    let path = image_path(&a.tb, "busybox:latest");
    let rec = a.pull_until_final(&user, &path, None);
    assert_eq!(rec["status"], "READY", "{rec}\n{}", a.log());
    let (st, v) = b.as_user(&user, "GET", &format!("/api/lookup/testbed/{path}/"), None);
    assert_eq!(
        st,
        200,
        "replica b sees replica a's image: {v}\n{}",
        b.log()
    );
    assert_eq!(v["id"], rec["id"]);
    // A restart of b keeps the record (it lives in PostgreSQL) and the files.
    b.restart();
    let (st, v) = b.as_user(&user, "GET", &format!("/api/lookup/testbed/{path}/"), None);
    assert_eq!((st, &v["id"]), (200, &rec["id"]), "{v}");
    assert_published(&shared, rec["id"].as_str().unwrap());
}

#[test]
fn a_repull_of_an_unchanged_tag_keeps_the_image_without_converting_again() {
    let Some(gw) = start("repull") else {
        return;
    };
    let user = gw.tb.user().to_owned();
    let path = image_path(&gw.tb, "busybox:latest");
    let first = gw.pull_until_final(&user, &path, None);
    assert_eq!(first["status"], "READY", "{first}");
    // Past the window in which a finished pull's result is returned as is.
    std::thread::sleep(Duration::from_millis(10_500));
    let again = gw.pull_until_final(&user, &path, None);
    assert_eq!(again["status"], "READY", "{again}\n{}", gw.log());
    assert_eq!(again["id"], first["id"]);
    assert_eq!(gw.metric("shifter_imagegw_pull_jobs_started_total"), 2.0);
    let converted = "shifter_imagegw_pull_duration_seconds_count{phase=\"conversion\"}";
    assert_eq!(gw.metric(converted), 1.0, "converted once");
    assert!(
        gw.log().contains("tag unchanged in the registry"),
        "{}",
        gw.log()
    );
}

/// The gateway's resident memory in kB, from `/proc/<pid>/status`.
fn vm_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Looks up every path in `paths` with a fresh credential each, from 8 threads;
/// returns how many answers had each status.
fn lookup_all(gw: &Gateway, paths: Vec<String>) -> std::collections::BTreeMap<u16, usize> {
    let socket = PathBuf::from(gw.tb.var("SHIFTER_MUNGE_SOCKET"));
    let chunk = paths.len().div_ceil(8);
    let threads: Vec<_> = paths
        .chunks(chunk)
        .map(|c| {
            let (c, socket) = (c.to_vec(), socket.clone());
            let prefix = format!("/api/lookup/{}/", gw.system);
            let base = gw.url("");
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(T).build();
                let mut seen = std::collections::BTreeMap::new();
                for p in c {
                    let path = format!("{prefix}{p}/");
                    let payload = shifter_integration::gateway::request_payload("GET", &path, None);
                    let cred =
                        munge_sys::encode(payload.as_bytes(), Some(&socket)).expect("munge encode");
                    let status = match agent
                        .get(&format!("{base}{path}"))
                        .set("authentication", &cred)
                        .call()
                    {
                        Ok(r) => r.status(),
                        Err(ureq::Error::Status(s, _)) => s,
                        Err(e) => panic!("lookup: {e}"),
                    };
                    *seen.entry(status).or_insert(0) += 1;
                }
                seen
            })
        })
        .collect();
    let mut all = std::collections::BTreeMap::new();
    for t in threads {
        for (s, n) in t.join().unwrap() {
            *all.entry(s).or_insert(0) += n;
        }
    }
    all
}

/// `n` distinct references from `start`: valid ones as long as the OCI limits
/// allow (a 250-character name and a 128-character tag, unknown: 404), or, with
/// `too_long`, an 8 KB name (refused at parse: 400).
fn long_unknown_paths(registry: &str, start: usize, n: usize, too_long: bool) -> Vec<String> {
    (start..start + n)
        .map(|i| {
            let name_len = if too_long { 8 << 10 } else { 250 };
            let mut repo = format!("r{i}-");
            repo.push_str(&"a".repeat(name_len - registry.len() - 1 - repo.len()));
            let tag = format!("t{i}{}", "b".repeat(128 - 1 - i.to_string().len()));
            let reference = format!("{registry}/{repo}:{tag}");
            let enc: String = reference
                .bytes()
                .map(|b| match b {
                    b'/' => "%2F".to_owned(),
                    b':' => "%3A".to_owned(),
                    _ => (b as char).to_string(),
                })
                .collect();
            format!("docker/{enc}")
        })
        .collect()
}

#[test]
fn twenty_thousand_distinct_unknown_long_references_leave_the_gateway_rss_flat() {
    let Some(gw) = start("rss") else {
        return;
    };
    let pid = gw.pid().unwrap();
    let registry = gw.tb.registry().to_owned();
    let started = std::time::Instant::now();
    // Warm up past the miss cache's capacity (4096), so it is full, and the
    // allocator and the connection pools have settled, before the baseline.
    let warm = lookup_all(&gw, long_unknown_paths(&registry, 0, 6000, false));
    assert_eq!(warm.get(&404), Some(&6000), "{warm:?}\n{}", gw.log_tail());
    let before = vm_rss_kb(pid);
    let mut paths = long_unknown_paths(&registry, 100_000, 10_000, false);
    paths.extend(long_unknown_paths(&registry, 200_000, 10_000, true));
    let seen = lookup_all(&gw, paths);
    let after = vm_rss_kb(pid);
    let took = started.elapsed();
    eprintln!(
        "(gateway: 20,000 unknown long references in {took:.1?}: {seen:?}; VmRSS {before} kB -> {after} kB)"
    );
    assert_eq!(seen.get(&404), Some(&10_000), "valid but unknown: {seen:?}");
    assert_eq!(
        seen.get(&400),
        Some(&10_000),
        "past the OCI limits: {seen:?}"
    );
    let grown = after.saturating_sub(before);
    assert!(
        grown < 4 << 10,
        "VmRSS grew by {grown} kB ({before} -> {after} kB) over 20,000 distinct misses"
    );
}
