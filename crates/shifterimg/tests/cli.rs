//! The `shifterimg` binary against a fake gateway, signing with the real munged
//! (skipped loudly when munged is not running): what a user types and reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gw_client::fake::{dead_gateway, record_json, FakeGateway};

const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TAG: &str = "127.0.0.1:5000/busybox:latest";

fn munged() -> bool {
    munge_sys::testing::munged().is_some()
}

/// A site config naming `gateways`, system `cluster9` and the test munged, so the host's own
/// /etc/shifter/shifter.toml never matters.
struct Site {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn site(gateways: &[&str]) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("shifter.toml");
    let list: Vec<String> = gateways.iter().map(|g| format!("{g:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "system = \"cluster9\"\nimage_dir = \"/var/lib/shifter/images\"\ngateways = [{}]\nlookup_timeout_secs = 2\nmunge_socket = {:?}\n",
            list.join(", "),
            munge_sys::testing::munged().unwrap_or(Path::new(munge_sys::DEFAULT_SOCKET))
        ),
    )
    .unwrap();
    Site { _dir: dir, config }
}

fn shifterimg(config: &Path, args: &[&str]) -> (i32, String, String) {
    shifterimg_stdin(config, args, "")
}

fn shifterimg_stdin(config: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_shifterimg"))
        .env_remove("SHIFTER_CONFIG")
        .env_remove("SHIFTER_LOG")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit without reading its input (a refused login).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out: Output = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn pull_prints_each_status_and_succeeds_when_ready() {
    if !munged() {
        return;
    }
    let gw = FakeGateway::start(vec![
        (200, record_json(ID, TAG, "PENDING", "")),
        (200, record_json(ID, TAG, "PULLING", "")),
        (200, record_json(ID, TAG, "READY", "")),
    ]);
    let s = site(&[&gw.url]);
    let (code, out, err) = shifterimg(&s.config, &["pull", TAG]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "docker:127.0.0.1:5000/busybox:latest: PENDING 5.0 MiB/10.0 MiB",
            "docker:127.0.0.1:5000/busybox:latest: PULLING 5.0 MiB/10.0 MiB",
            "docker:127.0.0.1:5000/busybox:latest: READY 0123456789ab (10.0 MiB)",
        ]
    );
    let seen = gw.seen();
    assert_eq!(
        seen[0].path,
        "/api/pull/cluster9/docker/127%2E0%2E0%2E1%3A5000%2Fbusybox%3Alatest/"
    );
    assert!(seen
        .iter()
        .all(|r| r.auth.as_deref().is_some_and(|a| a.starts_with("MUNGE:"))));
}

#[test]
fn pull_failure_exits_nonzero_with_the_gateway_message() {
    if !munged() {
        return;
    }
    let gw = FakeGateway::start(vec![(
        200,
        record_json(
            "",
            TAG,
            "FAILURE",
            "manifest unknown: tag nope not in 127.0.0.1:5000/busybox",
        ),
    )]);
    let s = site(&[&gw.url]);
    let (code, _out, err) = shifterimg(&s.config, &["pull", "127.0.0.1:5000/busybox:nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "pull of docker:127.0.0.1:5000/busybox:nope failed: manifest unknown: tag nope"
        ),
        "{err}"
    );
}

#[test]
fn pull_with_user_and_group_sends_numeric_acl() {
    if !munged() {
        return;
    }
    let gw = FakeGateway::start(vec![(200, record_json(ID, TAG, "READY", ""))]);
    let s = site(&[&gw.url]);
    let (code, _, err) = shifterimg(
        &s.config,
        &["pull", "--user", "root,1234", "--group", "root", TAG],
    );
    assert_eq!(code, 0, "{err}");
    let body: serde_json::Value = serde_json::from_str(&gw.seen()[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"allowed_uids": "0,1234", "allowed_gids": "0"})
    );
}

#[test]
fn lookup_prints_only_the_id() {
    if !munged() {
        return;
    }
    let gw = FakeGateway::start(vec![(200, record_json(ID, TAG, "READY", ""))]);
    let s = site(&[&gw.url]);
    let (code, out, err) = shifterimg(&s.config, &["lookup", "docker:127.0.0.1:5000/busybox"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("{ID}\n"));
    assert_eq!(
        gw.seen()[0].path,
        "/api/lookup/cluster9/docker/127%2E0%2E0%2E1%3A5000%2Fbusybox%3Alatest/"
    );
}

#[test]
fn unknown_image_fails_with_the_gateway_message_and_a_hint() {
    if !munged() {
        return;
    }
    let gw = FakeGateway::start(vec![(
        404,
        r#"{"error":"not_found","message":"no READY image docker:127.0.0.1:5000/nope:latest on cluster9"}"#.into(),
    )]);
    let s = site(&[&gw.url]);
    let (code, out, err) = shifterimg(&s.config, &["lookup", "127.0.0.1:5000/nope"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("no READY image docker:127.0.0.1:5000/nope:latest on cluster9"),
        "{err}"
    );
    assert!(
        err.contains("shifterimg pull docker:127.0.0.1:5000/nope:latest"),
        "{err}"
    );
}

#[test]
fn images_prints_an_aligned_table_and_json() {
    if !munged() {
        return;
    }
    let list = format!(
        r#"{{"list":[{},{}]}}"#,
        record_json(ID, TAG, "READY", ""),
        record_json(
            &"f".repeat(64),
            "docker.io/library/ubuntu:24.04",
            "READY",
            ""
        )
    );
    let gw = FakeGateway::start(vec![(200, list)]);
    let s = site(&[&gw.url]);
    let (code, out, err) = shifterimg(&s.config, &["images"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "tb  docker  READY  0123456789ab  2026-11-28T11:40:55  127.0.0.1:5000/busybox:latest\n\
         tb  docker  READY  ffffffffffff  2026-11-28T11:40:55  ubuntu:24.04\n"
    );
    let (code, out, _) = shifterimg(&s.config, &["images", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["list"][0]["id"], ID);
    assert_eq!(gw.seen()[0].path, "/api/list/cluster9/");
}

#[test]
fn dead_gateway_is_named_with_the_reason_and_the_fix() {
    if !munged() {
        return;
    }
    let dead = dead_gateway();
    let s = site(&[&dead]);
    let (code, _, err) = shifterimg(&s.config, &["lookup", TAG]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{dead}: connection refused")),
        "{err}"
    );
    assert!(err.contains("is the gateway running?"), "{err}");
}

#[test]
fn command_line_gateway_overrides_the_config_and_fails_over() {
    if !munged() {
        return;
    }
    let gw = FakeGateway::start(vec![(200, record_json(ID, TAG, "READY", ""))]);
    let s = site(&["http://127.0.0.1:9"]);
    let dead = dead_gateway();
    let (code, out, err) = shifterimg(
        &s.config,
        &[
            "--gateway",
            &dead,
            "--gateway",
            &gw.url,
            "--system",
            "other",
            "lookup",
            TAG,
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), ID);
    assert!(gw.seen()[0].path.starts_with("/api/lookup/other/"));
}

#[test]
fn missing_config_names_the_file_and_the_alternative() {
    let (code, _, err) = shifterimg(Path::new("/nonexistent/shifter.toml"), &["images"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/shifter.toml"), "{err}");
    assert!(err.contains("--gateway URL and --system NAME"), "{err}");
}

#[test]
fn bad_reference_is_refused_before_any_request() {
    let gw = FakeGateway::start(vec![(200, record_json(ID, TAG, "READY", ""))]);
    let s = site(&[&gw.url]);
    let (code, _, err) = shifterimg(&s.config, &["lookup", "Ubuntu:Bad Tag"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid docker reference"), "{err}");
    assert!(gw.seen().is_empty());
}

#[test]
fn login_sends_registry_user_and_password_from_stdin() {
    if !munged() {
        return;
    }
    let gw = FakeGateway::start(vec![(200, r#"{"result":"stored"}"#.into())]);
    let s = site(&[&gw.url]);
    let (code, out, err) = shifterimg_stdin(
        &s.config,
        &[
            "login",
            "--username",
            "alice",
            "--password-stdin",
            "registry.example.org:5000",
        ],
        "p4ss word\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("p4ss") && !err.contains("p4ss"),
        "password echoed: {out}{err}"
    );
    let seen = gw.seen();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/api/login/cluster9/");
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"registry": "registry.example.org:5000", "username": "alice", "password": "p4ss word"})
    );
}

#[test]
fn login_refuses_plain_http_to_another_host_before_asking() {
    let s = site(&["http://gw.invalid:7777"]);
    let (code, _, err) = shifterimg_stdin(
        &s.config,
        &["login", "-u", "alice", "--password-stdin"],
        "pw\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("http://gw.invalid:7777") && err.contains("--allow-http"),
        "{err}"
    );
}

#[test]
fn login_on_a_gateway_without_the_endpoint_says_so() {
    if !munged() {
        return;
    }
    let gw = FakeGateway::start(vec![(
        404,
        r#"{"error":"not_found","message":"no route"}"#.into(),
    )]);
    let s = site(&[&gw.url]);
    let (code, _, err) = shifterimg_stdin(
        &s.config,
        &["login", "-u", "alice", "--password-stdin"],
        "pw\n",
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("does not support storing registry credentials"),
        "{err}"
    );
}

#[test]
fn verbose_logs_never_show_the_credential() {
    if !munged() {
        return;
    }
    let gw = FakeGateway::start(vec![(200, record_json(ID, TAG, "READY", ""))]);
    let s = site(&[&gw.url]);
    for verbosity in ["-v", "-vv"] {
        let (code, _, err) = shifterimg(&s.config, &[verbosity, "lookup", TAG]);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("DEBUG"), "{verbosity} logged nothing: {err}");
        assert!(
            !err.contains("MUNGE:"),
            "credential in the {verbosity} log: {err}"
        );
    }
    assert!(gw
        .seen()
        .iter()
        .all(|r| r.auth.as_deref().is_some_and(|a| a.starts_with("MUNGE:"))));
}
