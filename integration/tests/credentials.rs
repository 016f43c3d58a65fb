//! End-to-end: what the gateway's Munge credentials say and where they go.
//! The credential the setuid `shifter` sends is captured with a listening
//! socket in place of the gateway and decoded as the gateway's account (root
//! may not: the credential is restricted to that account): it names the user
//! (not root), and its payload
//! is the purpose line of that one request. The real gateway refuses a plain
//! `munge -n` credential and one made for another request, and no client or
//! gateway log, at any level, prints a credential.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shifter_integration::gateway::request_payload;
use shifter_integration::slurm::serial;
use shifter_integration::{gid_of, uid_of, Gateway, GatewayOptions, Run, Testbed};

const T: Duration = Duration::from_secs(60);

/// Every Munge credential starts with this; none may appear in a log.
const MUNGE_PREFIX: &str = "MUNGE:";

fn slurmd_pid(tb: &Testbed) -> String {
    let node = &tb.nodes()[0];
    let f = tb.dir.join("pids").join(format!("slurmd-{node}.pid"));
    std::fs::read_to_string(&f)
        .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
        .trim()
        .to_owned()
}

fn setuid_bin(tb: &Testbed) -> String {
    tb.var_opt("SHIFTER_SETUID_BIN")
        .expect("SHIFTER_SETUID_BIN missing from the cluster env: the runtime hook did not install shifter")
        .to_owned()
}

/// The setuid `shifter` run by the test user in node n1's mount namespace
/// (as users run it), with `env` added to a clean environment. With `config`,
/// a private mount namespace first binds that file over
/// `/etc/shifter/shifter.toml`, the only config a setuid `shifter` reads.
fn setuid_shifter(tb: &Testbed, config: Option<&Path>, env: &[(&str, &str)], args: &[&str]) -> Run {
    let user = tb.user();
    let bind = match config {
        Some(c) => format!(
            "mount --bind '{}' /etc/shifter/shifter.toml && ",
            c.display()
        ),
        None => String::new(),
    };
    let script = format!(
        "{bind}exec setpriv --reuid={} --regid={} --init-groups -- \"$@\"",
        uid_of(user),
        gid_of(user)
    );
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", &T.as_secs().to_string()])
        .args(["nsenter", "-t", &slurmd_pid(tb), "-m", "--"])
        .args(["unshare", "-m", "--propagation", "private", "--"])
        .args(["sh", "-c", &script, "sh", &setuid_bin(tb)])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("USER", user)
        .envs(env.iter().copied())
        .current_dir(tb.workdir());
    let started = Instant::now();
    let out = cmd
        .output()
        .expect("timeout/nsenter/unshare (coreutils, util-linux)");
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// One request as a listening socket saw it.
struct Captured {
    method: String,
    target: String,
    credential: String,
}

/// Accepts one connection on `listener`, records its request line and
/// `authentication` header, and answers 404 as a gateway would for an
/// unknown image.
fn capture_one(listener: TcpListener) -> mpsc::Receiver<Captured> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut first = line.split_whitespace();
        let method = first.next().unwrap_or_default().to_owned();
        let target = first.next().unwrap_or_default().to_owned();
        let mut credential = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                break;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("authentication") {
                    credential = v.trim().to_owned();
                }
            }
        }
        let body = r#"{"error":"not_found","message":"no such image (capture socket)"}"#;
        let mut s = stream;
        let _ = write!(
            s,
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tx.send(Captured {
            method,
            target,
            credential,
        });
    });
    rx
}

/// `unmunge` as `user`: the metadata fields and the payload, or what
/// unmunge said when it refused.
fn unmunge_as(user: &str, credential: &str) -> Result<(String, String), String> {
    let mut child = Command::new("runuser")
        .args(["-u", user, "--", "unmunge"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unmunge (Debian package munge)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(credential.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // The metadata, a blank line, then the payload as it was encoded.
    let (meta, payload) = text.split_once("\n\n").unwrap_or((&text, ""));
    Ok((meta.to_owned(), payload.to_owned()))
}

fn field<'a>(meta: &'a str, key: &str) -> &'a str {
    meta.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key} in unmunge's output:\n{meta}"))
}

#[test]
fn the_setuid_shifter_sends_a_credential_of_the_user_for_the_gateway_and_that_request_only() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let captured = capture_one(listener);

    // The cluster's config with the capture socket as the only gateway.
    let dir = tb.dir.join(format!("cred-capture-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = std::fs::read_to_string(tb.config_path()).unwrap();
    let config: String = cluster
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("gateways") {
                format!("gateways = [\"{url}\"]")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(config.contains(&url), "no gateways line in {cluster}");
    let conf = dir.join("shifter.toml");
    std::fs::write(&conf, config + "\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();

    let image = format!("--image=docker:{}/busybox:cred-capture", tb.registry());
    let r = setuid_shifter(&tb, Some(&conf), &[], &[&image, "/bin/true"]);
    r.assert_failed();
    assert!(
        r.stderr.contains("capture socket"),
        "the lookup reached the capture socket: {r}"
    );
    let seen = captured
        .recv_timeout(Duration::from_secs(10))
        .expect("the setuid shifter sent no request to the capture socket");
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(seen.method, "GET");
    assert!(
        seen.target.starts_with("/api/lookup/testbed/docker/"),
        "{}",
        seen.target
    );
    assert!(
        seen.credential.starts_with(MUNGE_PREFIX),
        "{}",
        seen.credential
    );
    // Restricted to the gateway's account: munged refuses even root (a
    // refused decode does not consume the credential), and the gateway
    // account decodes it.
    let refused = unmunge_as("root", &seen.credential).expect_err("root decoded it");
    assert!(refused.contains("Unauthorized"), "{refused}");
    let gw_user = tb.var("SHIFTER_GW_USER");
    let (meta, payload) = unmunge_as(gw_user, &seen.credential)
        .unwrap_or_else(|e| panic!("the gateway account cannot decode it: {e}"));
    let uid = uid_of(tb.user());
    assert!(
        field(&meta, "UID").ends_with(&format!("({uid})")),
        "the credential names the user, not root:\n{meta}"
    );
    let gw_uid = uid_of(gw_user);
    assert!(
        field(&meta, "UID_RESTRICTION").ends_with(&format!("({gw_uid})")),
        "only the gateway's account may decode it:\n{meta}"
    );
    assert_eq!(
        payload,
        request_payload("GET", &seen.target, None),
        "the payload is the purpose line of this request"
    );
    assert!(!r.stderr.contains(MUNGE_PREFIX), "{r}");
}

#[test]
fn the_gateway_refuses_a_plain_munge_credential_and_one_made_for_another_request() {
    let Some(tb) = Testbed::get() else { return };
    let gw = Gateway::start(&tb, "cred-refuse", GatewayOptions::default());
    let user = tb.user().to_owned();
    let list = "/api/list/testbed/";

    let plain = gw.cred_unbound(&user);
    let (st, v) = gw.call("GET", list, Some(&plain), None);
    assert_eq!(st, 401, "plain munge -n: {v}");
    assert!(v["message"].as_str().unwrap().contains("no payload"), "{v}");

    let other = gw.cred_for(&user, "GET", "/api/queue/testbed/", None);
    let (st, v) = gw.call("GET", list, Some(&other), None);
    assert_eq!(st, 401, "made for another request: {v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("cannot be used for"),
        "{v}"
    );

    let body = serde_json::json!({"allowed_uids": uid_of(&user).to_string()});
    let pull = format!(
        "/api/pull/testbed/{}/",
        shifter_integration::image_path(&tb, "busybox:latest")
    );
    let no_acl = gw.cred_for(&user, "POST", &pull, None);
    let (st, v) = gw.call("POST", &pull, Some(&no_acl), Some(&body));
    assert_eq!(st, 401, "made for another body: {v}");
    assert!(v["message"].as_str().unwrap().contains("body"), "{v}");

    let (st, v) = gw.call("GET", "/api/queue/testbed/", None, None);
    assert_eq!(st, 401, "the queue needs a credential: {v}");
    let (st, v) = gw.as_user(&user, "GET", "/api/queue/testbed/", None);
    assert_eq!(st, 200, "{v}");
    let (st, v) = gw.as_user(&user, "GET", list, None);
    assert_eq!(st, 200, "a credential bound to its request works: {v}");
    assert_eq!(
        gw.metric("shifter_imagegw_auth_failures_total{reason=\"unbound\"}"),
        3.0
    );
}

#[test]
fn no_log_of_shifterimg_shifter_the_plugin_or_the_gateway_prints_a_credential_at_trace() {
    let Some(tb) = Testbed::get() else { return };
    let _serial = serial();
    let gw = Gateway::start(
        &tb,
        "cred-logs",
        GatewayOptions {
            rust_log: Some("trace".into()),
            ..GatewayOptions::default()
        },
    );
    let user = tb.user().to_owned();
    let image = format!("{}/busybox:latest", tb.registry());
    let bin = tb.bin_dir().join("shifterimg");
    let cfg = tb.config_path();
    // Every way a user could ask for ureq's header dump.
    let levels = ["trace", "ureq=trace", "ureq::unit=trace,debug"];
    for level in levels {
        for args in [
            vec!["-vv", "pull", image.as_str()],
            vec!["-vv", "lookup", image.as_str()],
            vec!["-vv", "images"],
        ] {
            let mut all = vec![bin.to_str().unwrap(), "--config", cfg.as_str(), "--gateway"];
            let url = gw.url("");
            all.push(&url);
            all.extend(args.iter().copied());
            let r = tb.run_as_with_env(
                &user,
                &all,
                &[("SHIFTER_LOG", level), ("RUST_LOG", "trace")],
                T,
            );
            r.assert_ok();
            if level == "trace" {
                assert!(r.stderr.contains("DEBUG"), "logging is on: {r}");
            }
            assert!(
                !r.stderr.contains(MUNGE_PREFIX) && !r.stdout.contains(MUNGE_PREFIX),
                "SHIFTER_LOG={level} shifterimg {args:?} printed a credential: {r}"
            );
        }
    }

    // The setuid shifter against the cluster's gateway, asked for everything.
    let pulled = tb.pulled("busybox:latest");
    let r = setuid_shifter(
        &tb,
        None,
        &[("SHIFTER_LOG", "trace"), ("RUST_LOG", "trace")],
        &[&format!("--image={pulled}"), "/bin/true"],
    );
    r.assert_ok();
    assert!(!r.stderr.contains(MUNGE_PREFIX), "setuid shifter: {r}");

    // The plugin's lookup at submit, with srun at its most verbose.
    let r = tb.run_as_with_env(
        &user,
        &["srun", "-vvvv", &format!("--image={pulled}"), "/bin/true"],
        &[("SHIFTER_LOG", "trace"), ("RUST_LOG", "trace")],
        T,
    );
    r.assert_ok();
    assert!(
        r.stderr.contains("phase resolve"),
        "the plugin looked the tag up: {r}"
    );
    assert!(
        !r.stderr.contains(MUNGE_PREFIX),
        "srun -vvvv with the plugin: {r}"
    );

    let log = gw.log();
    assert!(
        log.contains("authenticated"),
        "the gateway logged at debug and below:\n{}",
        gw.log_tail()
    );
    assert!(
        !log.contains(MUNGE_PREFIX),
        "the gateway logged a credential at trace"
    );
}
