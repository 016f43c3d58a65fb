//! The client against tiny local HTTP servers: failover order, timeouts, 4xx
//! passthrough and what goes on the wire. No munged needed: a fixed
//! authenticator stands in for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gw_client::fake::{dead_gateway, record_json, silent_gateway, FakeGateway as Server};
use gw_client::{Authenticator, Client, ClientError, PollOptions};
use munge_sys::MungeError;
use shifter_api::{ImageRef, ImageStatus, PullRequest};

/// Hands out `cred-1`, `cred-2`, … so tests can see a fresh one per request.
#[derive(Default)]
struct Counter(AtomicUsize);

impl Authenticator for Counter {
    fn credential(&self, _: &str, _: &str, _: &[u8]) -> Result<String, MungeError> {
        Ok(format!(
            "cred-{}",
            self.0.fetch_add(1, Ordering::SeqCst) + 1
        ))
    }
}

struct NoMunge;

impl Authenticator for NoMunge {
    fn credential(&self, _: &str, _: &str, _: &[u8]) -> Result<String, MungeError> {
        Err(MungeError::SocketUnavailable {
            socket: "/run/munge/munge.socket.2".into(),
            message: "Failed to connect".into(),
        })
    }
}

fn record(status: &str) -> String {
    record_json(
        &"ab".repeat(32),
        "127.0.0.1:5000/busybox:latest",
        status,
        "",
    )
}

fn client(gws: Vec<String>, timeout: Duration) -> Client {
    Client::with_authenticator(gws, "tb", timeout, Box::new(Counter::default())).unwrap()
}

fn busybox() -> ImageRef {
    ImageRef::parse("127.0.0.1:5000/busybox:latest").unwrap()
}

#[test]
fn lookup_skips_a_dead_gateway_and_uses_the_next() {
    let live = Server::start(vec![(200, record("READY"))]);
    let dead = dead_gateway();
    let c = client(vec![dead, live.url.clone()], Duration::from_secs(5));
    let rec = c.lookup(&busybox()).unwrap();
    assert_eq!(rec.status, ImageStatus::Ready);
    assert_eq!(rec.id, "ab".repeat(32));
    let seen = live.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].path,
        "/api/lookup/tb/docker/127%2E0%2E0%2E1%3A5000%2Fbusybox%3Alatest/"
    );
    // The dead gateway consumed cred-1: every attempt gets its own credential.
    assert_eq!(seen[0].auth.as_deref(), Some("cred-2"));
}

#[test]
fn server_errors_fail_over_in_configured_order() {
    let sick = Server::start(vec![(
        503,
        r#"{"error":"overloaded","message":"busy"}"#.into(),
    )]);
    let live = Server::start(vec![(200, r#"{"list":[]}"#.into())]);
    let c = client(
        vec![sick.url.clone(), live.url.clone()],
        Duration::from_secs(5),
    );
    assert!(c.list().unwrap().is_empty());
    assert_eq!(sick.seen().len(), 1);
    assert_eq!(live.seen()[0].path, "/api/list/tb/");
}

#[test]
fn all_gateways_down_lists_each_with_its_reason() {
    let dead = dead_gateway();
    let silent = silent_gateway();
    let c = client(
        vec![dead.clone(), silent.clone()],
        Duration::from_millis(300),
    );
    let start = Instant::now();
    let err = c.lookup(&busybox()).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "timeout not honoured"
    );
    let ClientError::Unavailable { tried } = &err else {
        panic!("expected Unavailable, got {err:?}")
    };
    assert_eq!(tried.len(), 2);
    assert_eq!(tried[0].gateway, dead);
    assert_eq!(tried[0].reason, "connection refused");
    assert_eq!(tried[1].gateway, silent);
    assert_eq!(tried[1].reason, "timed out after 300 ms");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{dead}: connection refused; {silent}: timed out")),
        "{msg}"
    );
}

#[test]
fn not_found_is_final_and_carries_the_gateway_message() {
    let first = Server::start(vec![(
        404,
        r#"{"error":"not_found","message":"no READY image for docker:127.0.0.1:5000/nope:latest"}"#
            .into(),
    )]);
    let second = Server::start(vec![(200, record("READY"))]);
    let c = client(
        vec![first.url.clone(), second.url.clone()],
        Duration::from_secs(5),
    );
    let err = c.lookup(&busybox()).unwrap_err();
    let ClientError::NotFound { gateway, body } = &err else {
        panic!("expected NotFound, got {err:?}")
    };
    assert_eq!(gateway, &first.url);
    assert_eq!(body.error, "not_found");
    assert!(err
        .to_string()
        .contains("no READY image for docker:127.0.0.1:5000/nope:latest"));
    assert!(second.seen().is_empty(), "a 4xx answer must not fail over");
}

#[test]
fn status_codes_map_to_typed_errors() {
    for (status, check) in [
        (
            400,
            (|e: &ClientError| matches!(e, ClientError::BadRequest { .. }))
                as fn(&ClientError) -> bool,
        ),
        (401, |e| matches!(e, ClientError::Unauthorized { .. })),
        (403, |e| matches!(e, ClientError::Forbidden { .. })),
        (409, |e| matches!(e, ClientError::Conflict { .. })),
    ] {
        let s = Server::start(vec![(status, r#"{"error":"e","message":"m"}"#.into())]);
        let err = client(vec![s.url.clone()], Duration::from_secs(5))
            .expire(&busybox())
            .unwrap_err();
        assert!(check(&err), "{status}: {err:?}");
    }
}

#[test]
fn pull_posts_the_acl_body_and_polls_until_final() {
    let s = Server::start(vec![
        (200, record("PENDING")),
        (200, record("PULLING")),
        (200, record("READY")),
    ]);
    let c = client(vec![s.url.clone()], Duration::from_secs(5));
    let req = PullRequest {
        allowed_uids: Some("1001,1002".into()),
        allowed_gids: None,
        private: false,
    };
    let mut statuses = Vec::new();
    let poll = PollOptions {
        interval: Duration::from_millis(10),
        max_wait: None,
    };
    let rec = c
        .pull_and_wait(&busybox(), &req, &poll, |r| statuses.push(r.status))
        .unwrap();
    assert_eq!(rec.status, ImageStatus::Ready);
    assert_eq!(
        statuses,
        [
            ImageStatus::Pending,
            ImageStatus::Pulling,
            ImageStatus::Ready
        ]
    );
    let seen = s.seen();
    assert!(seen
        .iter()
        .all(|r| r.method == "POST" && r.path.starts_with("/api/pull/tb/docker/")));
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body, serde_json::json!({"allowed_uids": "1001,1002"}));
    let creds: Vec<_> = seen.iter().map(|r| r.auth.clone().unwrap()).collect();
    assert_eq!(creds, ["cred-1", "cred-2", "cred-3"]);
}

#[test]
fn pull_failure_is_returned_with_its_message() {
    let fail = record_json(
        &"ab".repeat(32),
        "127.0.0.1:5000/busybox:nope",
        "FAILURE",
        "manifest unknown: 127.0.0.1:5000/busybox:nope",
    );
    let s = Server::start(vec![(200, fail)]);
    let c = client(vec![s.url.clone()], Duration::from_secs(5));
    let rec = c
        .pull_and_wait(
            &busybox(),
            &PullRequest::default(),
            &PollOptions::default(),
            |_| {},
        )
        .unwrap();
    assert_eq!(rec.status, ImageStatus::Failure);
    assert!(rec.status_message.contains("manifest unknown"));
}

#[test]
fn pull_gives_up_after_max_wait() {
    let s = Server::start(vec![(200, record("PULLING"))]);
    let c = client(vec![s.url.clone()], Duration::from_secs(5));
    let poll = PollOptions {
        interval: Duration::from_millis(20),
        max_wait: Some(Duration::from_millis(100)),
    };
    let err = c
        .pull_and_wait(&busybox(), &PullRequest::default(), &poll, |_| {})
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::PullTimedOut {
                status: ImageStatus::Pulling,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn import_sends_the_absolute_path_as_custom_image() {
    let s = Server::start(vec![(200, record("READY"))]);
    let c = client(vec![s.url.clone()], Duration::from_secs(5));
    c.import(std::path::Path::new("/scratch/site.sqfs"), "site-img")
        .unwrap();
    let seen = s.seen();
    assert_eq!(seen[0].path, "/api/doimport/tb/custom/site%2Dimg/");
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"filepath": "/scratch/site.sqfs", "format": "squashfs"})
    );
    assert!(matches!(
        c.import(std::path::Path::new("rel.sqfs"), "x"),
        Err(ClientError::InvalidArgument(_))
    ));
    assert!(matches!(
        c.import(std::path::Path::new("/a.sqfs"), "../etc"),
        Err(ClientError::InvalidArgument(_))
    ));
}

#[test]
fn admin_operations_hit_their_endpoints() {
    let s = Server::start(vec![(200, r#"{"status":"ok"}"#.into())]);
    let c = client(vec![s.url.clone()], Duration::from_secs(5));
    c.expire(&busybox()).unwrap();
    c.autoexpire().unwrap();
    let paths: Vec<_> = s.seen().into_iter().map(|r| (r.method, r.path)).collect();
    assert_eq!(
        paths[0].1,
        "/api/expire/tb/docker/127%2E0%2E0%2E1%3A5000%2Fbusybox%3Alatest/"
    );
    assert_eq!(paths[1], ("GET".into(), "/api/autoexpire/tb/".into()));
}

#[test]
fn munged_down_stops_before_any_request() {
    let s = Server::start(vec![(200, record("READY"))]);
    let c = Client::with_authenticator(
        vec![s.url.clone()],
        "tb",
        Duration::from_secs(5),
        Box::new(NoMunge),
    )
    .unwrap();
    let err = c.lookup(&busybox()).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Munge(MungeError::SocketUnavailable { .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("is munged running"), "{err}");
    assert!(s.seen().is_empty());
}

#[test]
fn garbage_success_body_is_reported_not_panicked() {
    let s = Server::start(vec![(200, "not json".into())]);
    let c = client(vec![s.url.clone()], Duration::from_secs(5));
    assert!(matches!(
        c.lookup(&busybox()),
        Err(ClientError::BadResponse { .. })
    ));
}

#[test]
fn real_munge_credential_on_the_wire_decodes_to_the_caller() {
    let Some(sock) = munge_sys::testing::munged() else {
        return;
    };
    let s = Server::start(vec![(200, record("READY"))]);
    let c = Client::new(
        vec![s.url.clone()],
        "tb",
        Duration::from_secs(5),
        Some(sock.into()),
        None,
    )
    .unwrap();
    c.lookup(&busybox()).unwrap();
    let cred = s.seen()[0]
        .auth
        .clone()
        .expect("authentication header sent");
    let decoded = munge_sys::decode(&cred, Some(sock)).unwrap();
    assert_eq!(
        String::from_utf8(decoded.payload).unwrap(),
        shifter_api::credential::request_payload("GET", &s.seen()[0].path, b""),
        "the payload names the gateway and this request"
    );
    let euid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .unwrap();
    assert_eq!(decoded.uid.to_string(), euid);
}

/// Binds what the authenticator was asked to sign, so the test can compare
/// it with what went on the wire.
#[derive(Default, Clone)]
struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Authenticator for Recorder {
    fn credential(&self, method: &str, path: &str, body: &[u8]) -> Result<String, MungeError> {
        let p = shifter_api::credential::request_payload(method, path, body);
        self.0.lock().unwrap().push(p.clone());
        Ok(p.replace(' ', "_"))
    }
}

#[test]
fn each_credential_binds_the_method_path_and_exact_body_bytes_sent_to_each_gateway() {
    let dead = dead_gateway();
    let live = Server::start(vec![(200, record("READY"))]);
    let rec = Recorder::default();
    // The gateway URL's own prefix is not signed: the gateway sees its own paths.
    let c = Client::with_authenticator(
        vec![dead, format!("{}/", live.url)],
        "tb",
        Duration::from_secs(5),
        Box::new(rec.clone()),
    )
    .unwrap();
    let req = PullRequest {
        allowed_uids: Some("1001".into()),
        allowed_gids: None,
        private: false,
    };
    c.pull(&busybox(), &req).unwrap();
    let seen = live.seen();
    let signed = rec.0.lock().unwrap().clone();
    assert_eq!(
        signed.len(),
        2,
        "one fresh credential per gateway tried: {signed:?}"
    );
    let want =
        shifter_api::credential::request_payload("POST", &seen[0].path, seen[0].body.as_bytes());
    assert_eq!(signed[1], want);
    assert_eq!(
        seen[0].auth.as_deref(),
        Some(want.replace(' ', "_").as_str())
    );
    assert!(seen[0].body.contains("1001"), "{:?}", seen[0].body);
}

#[test]
fn redirects_are_not_followed_so_the_credential_stays_put() {
    let elsewhere = Server::start(vec![(200, record("READY"))]);
    let redirector = Server::redirecting(&format!("{}/api/lookup/tb/x/", elsewhere.url));
    let c = client(vec![redirector.url.clone()], Duration::from_secs(5));
    let err = c.lookup(&busybox()).unwrap_err();
    let ClientError::Unavailable { tried } = &err else {
        panic!("expected Unavailable, got {err:?}")
    };
    assert!(tried[0].reason.contains("302"), "{err}");
    assert_eq!(redirector.seen().len(), 1);
    assert!(elsewhere.seen().is_empty(), "the redirect was followed");
}

#[test]
fn credentials_can_be_restricted_to_the_gateway_account() {
    let Some(sock) = munge_sys::testing::munged() else {
        return;
    };
    let s = Server::start(vec![(200, record("READY"))]);
    let auth = gw_client::MungeAuth {
        socket: Some(sock.into()),
        gateway_uid: Some(65534),
    };
    let c = Client::with_authenticator(
        vec![s.url.clone()],
        "tb",
        Duration::from_secs(5),
        Box::new(auth),
    )
    .unwrap();
    c.lookup(&busybox()).unwrap();
    let cred = s.seen()[0].auth.clone().unwrap();
    // The restriction shows in munged's answer to other users: nobody
    // (65534) may decode it, daemon (1) may not.
    let unmunge = |user: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new("runuser")
            .args(["-u", user, "--", "unmunge", "--socket"])
            .arg(sock)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(cred.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        test_skip::skip(
            "gw-client failover uid-restricted decode",
            "needs root to decode as other users",
        );
        return;
    }
    assert!(
        unmunge("daemon").contains("Unauthorized"),
        "{}",
        unmunge("daemon")
    );
}

#[test]
fn a_tag_resolves_to_its_id_only_when_the_image_is_ready() {
    let reference = ImageRef::parse("docker:busybox:latest").unwrap();
    let ready = Server::start(vec![(200, record("READY"))]);
    let c = client(vec![ready.url.clone()], Duration::from_secs(5));
    let id = gw_client::resolve_ready(&c, &reference).unwrap();
    assert_eq!(id.as_str(), "ab".repeat(32));
    let pulling = Server::start(vec![(200, record("PULLING"))]);
    let c = client(vec![pulling.url.clone()], Duration::from_secs(5));
    let err = gw_client::resolve_ready(&c, &reference).unwrap_err();
    assert!(
        matches!(err, gw_client::ResolveError::NotReady { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("wait for `shifterimg pull"),
        "{err}"
    );
}
