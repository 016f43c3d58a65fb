//! End-to-end: `shifterimg` as the test user against the cluster's real gateway,
//! munged and registry. Skips loudly without a cluster or without a gateway
//! (`SHIFTER_GATEWAY` in `$SHIFTER_TB/env`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use shifter_integration::{registry, Run, Testbed};

const TIMEOUT: Duration = Duration::from_secs(180);

struct Gw {
    tb: Testbed,
    url: String,
    system: String,
}

fn gateway() -> Option<Gw> {
    let tb = Testbed::get()?;
    let Some(url) = tb.var_opt("SHIFTER_GATEWAY").map(str::to_owned) else {
        if std::env::var("SHIFTER_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("SHIFTER_GATEWAY missing from the cluster env: the gateway hook did not run");
        }
        test_skip::skip(
            "shifterimg test",
            "no image gateway in this cluster (SHIFTER_GATEWAY unset)",
        );
        return None;
    };
    let system = tb
        .var_opt("SHIFTER_GW_SYSTEM")
        .unwrap_or("testbed")
        .to_owned();
    Some(Gw { tb, url, system })
}

impl Gw {
    fn bin(&self) -> String {
        self.tb.bin_dir().join("shifterimg").display().to_string()
    }

    /// The site config when a hook wrote one (for the munge socket); the
    /// gateway and system always come from the cluster env.
    fn config(&self) -> Option<String> {
        let p = self
            .tb
            .var_opt("SHIFTER_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.tb.dir.join("etc/shifter.toml"));
        p.exists().then(|| p.display().to_string())
    }

    /// Runs shifterimg as the test user with the given gateway URL.
    fn run_with(&self, gateway: &str, args: &[&str]) -> Run {
        let bin = self.bin();
        let config = self.config();
        let mut all: Vec<&str> = vec![&bin];
        if let Some(c) = &config {
            all.extend(["--config", c]);
        }
        all.extend(["--gateway", gateway, "--system", &self.system]);
        all.extend_from_slice(args);
        self.tb.run_as(self.tb.user(), &all, TIMEOUT)
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(&self.url, args)
    }

    fn busybox(&self) -> String {
        format!("docker:{}/busybox:latest", self.tb.registry())
    }
}

/// The id the gateway must report: the sha256 of the registry's manifest.
fn manifest_id(tb: &Testbed, repo: &str, tag: &str) -> String {
    let m = registry::get_manifest(tb.registry(), repo, tag).expect("registry manifest");
    registry::sha256_digest(&m.body)
        .strip_prefix("sha256:")
        .unwrap()
        .to_owned()
}

#[test]
fn pull_reaches_ready_then_lookup_and_images_agree_with_the_registry() {
    let Some(gw) = gateway() else { return };
    let image = gw.busybox();
    let want = manifest_id(&gw.tb, "busybox", "latest");

    let pull = gw.run(&["pull", &image]);
    pull.assert_ok();
    // Not a terminal here: one plain line per status, ending with READY and the id.
    assert!(
        pull.stdout
            .lines()
            .all(|l| l.starts_with(&format!("{image}: "))),
        "{pull}"
    );
    let last = pull.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("{image}: READY {}", &want[..12])),
        "{pull}"
    );

    let lookup = gw.run(&["lookup", &image]);
    lookup.assert_ok();
    let id = lookup.stdout.trim();
    assert_eq!(id.len(), 64, "{lookup}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{lookup}");
    assert_eq!(id, want, "lookup id is not the manifest digest");
    assert_eq!(
        lookup.stdout,
        format!("{want}\n"),
        "lookup must print the id only"
    );

    let images = gw.run(&["images"]);
    images.assert_ok();
    let tag = format!("{}/busybox:latest", gw.tb.registry());
    let row = images
        .stdout
        .lines()
        .find(|l| l.ends_with(&tag))
        .unwrap_or_else(|| panic!("busybox missing from images: {images}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], gw.system, "{row}");
    assert_eq!(cols[1], "docker", "{row}");
    assert_eq!(cols[2], "READY", "{row}");
    assert_eq!(cols[3], &want[..12], "{row}");

    let json = gw.run(&["images", "--json"]);
    json.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("images --json is JSON");
    assert!(
        v["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == want.as_str()),
        "{json}"
    );
}

#[test]
fn pull_of_an_unknown_tag_fails_with_a_message_naming_it() {
    let Some(gw) = gateway() else { return };
    let image = format!("docker:{}/busybox:no-such-tag", gw.tb.registry());
    let r = gw.run(&["pull", &image]);
    r.assert_failed();
    assert!(r.stderr.contains("shifterimg: error:"), "{r}");
    assert!(
        r.stderr.contains("no-such-tag"),
        "message does not name the tag: {r}"
    );
    assert!(r.stdout.contains("FAILURE"), "no FAILURE status line: {r}");
}

#[test]
fn lookup_of_an_image_never_pulled_says_how_to_get_it() {
    let Some(gw) = gateway() else { return };
    let image = format!("docker:{}/never-pulled:latest", gw.tb.registry());
    let r = gw.run(&["lookup", &image]);
    r.assert_failed();
    assert!(r.stdout.is_empty(), "{r}");
    assert!(
        r.stderr.contains(&format!("shifterimg pull {image}")),
        "{r}"
    );
}

#[test]
fn dead_gateway_error_names_it_and_its_reason() {
    let Some(gw) = gateway() else { return };
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let r = gw.run_with(&dead, &["lookup", &gw.busybox()]);
    r.assert_failed();
    assert!(
        r.stderr.contains(&format!("{dead}: connection refused")),
        "{r}"
    );
    assert!(r.stderr.contains("is the gateway running?"), "{r}");
}

#[test]
fn pull_with_user_list_keeps_the_image_from_other_users() {
    let Some(gw) = gateway() else { return };
    // multi:dockerlist is used by no other test, so making it private here
    // cannot break them.
    let image = format!("docker:{}/multi:dockerlist", gw.tb.registry());
    let owner = gw.tb.user().to_owned();
    gw.run(&["pull", "--user", &owner, &image]).assert_ok();
    let mine = gw.run(&["lookup", &image]);
    mine.assert_ok();
    assert_eq!(mine.stdout.trim().len(), 64, "{mine}");

    let bin = gw.bin();
    let other = |args: &[&str]| {
        let mut all = vec![bin.as_str(), "--gateway", &gw.url, "--system", &gw.system];
        all.extend_from_slice(args);
        gw.tb.run_as(gw.tb.user2(), &all, TIMEOUT)
    };
    let theirs = other(&["lookup", &image]);
    theirs.assert_failed();
    assert!(theirs.stdout.is_empty(), "{theirs}");
    let listed = other(&["images"]);
    listed.assert_ok();
    assert!(!listed.stdout.contains("multi:dockerlist"), "{listed}");
}

#[test]
fn import_publishes_a_site_squashfs_as_custom_image() {
    let Some(gw) = gateway() else { return };
    let dir = gw
        .tb
        .workdir()
        .join(format!("shifterimg-import-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("root/etc")).unwrap();
    std::fs::write(dir.join("root/etc/os-release"), "ID=site-import\n").unwrap();
    let sqfs = dir.join("site.sqfs");
    let mk = gw.tb.run_root(
        &[
            "mksquashfs",
            dir.join("root").to_str().unwrap(),
            sqfs.to_str().unwrap(),
            "-noappend",
            "-quiet",
        ],
        TIMEOUT,
    );
    mk.assert_ok();
    // The gateway reads the file as the caller: let the test user own it.
    let chown = gw.tb.run_root(
        &["chown", "-R", gw.tb.user(), dir.to_str().unwrap()],
        TIMEOUT,
    );
    chown.assert_ok();
    let want = registry::sha256_digest(&std::fs::read(&sqfs).unwrap())
        .strip_prefix("sha256:")
        .unwrap()
        .to_owned();

    let name = format!("e2e-import-{}", std::process::id());
    let r = gw.run(&["import", sqfs.to_str().unwrap(), &name]);
    let _ = std::fs::remove_dir_all(&dir);
    r.assert_ok();
    assert_eq!(r.stdout.trim(), want, "{r}");
    let lookup = gw.run(&["lookup", &format!("custom:{name}")]);
    lookup.assert_ok();
    assert_eq!(lookup.stdout.trim(), want, "{lookup}");
}

#[test]
fn login_stores_credentials_at_the_gateway_without_echoing_them() {
    let Some(gw) = gateway() else { return };
    let bin = gw.bin();
    // A script's way in: the password on standard input, never in argv.
    let script = format!(
        "printf 'e2e-secret-pw\\n' | {bin} --gateway {} --system {} login --username e2e-user --password-stdin {}",
        gw.url,
        gw.system,
        gw.tb.registry()
    );
    let r = gw.tb.run_as(gw.tb.user(), &["sh", "-c", &script], TIMEOUT);
    r.assert_ok();
    assert!(r.stderr.contains("stored at the gateway"), "{r}");
    assert!(
        !r.stdout.contains("e2e-secret-pw") && !r.stderr.contains("e2e-secret-pw"),
        "{r}"
    );
    // The gateway must not log it either.
    let log = gw.tb.dir.join("log/imagegw.log");
    if let Ok(text) = std::fs::read_to_string(&log) {
        assert!(
            !text.contains("e2e-secret-pw"),
            "password in {}",
            log.display()
        );
    }
}
