//! Against the real munged. Skips loudly when it is not running.

use std::path::Path;
use std::time::{Duration, SystemTime};

use munge_sys::{decode, encode, encode_with, EncodeOptions, MungeError};

fn munged() -> Option<&'static Path> {
    munge_sys::testing::munged()
}

#[test]
fn credential_round_trips_with_payload_and_caller_identity() {
    let Some(sock) = munged() else { return };
    let cred = encode(b"hello gateway", Some(sock)).unwrap();
    assert!(cred.starts_with("MUNGE:"), "{cred}");
    let d = decode(&cred, Some(sock)).unwrap();
    assert_eq!(d.payload, b"hello gateway");
    // munged vouches for the real uid of the encoding process.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid: u32 = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(d.uid, uid);
    let age = SystemTime::now().duration_since(d.encode_time).unwrap();
    assert!(age < Duration::from_secs(60), "encode time {age:?} ago");
    assert!(d.ttl > Duration::ZERO);
}

#[test]
fn empty_payload_decodes_to_empty() {
    let Some(sock) = munged() else { return };
    let d = decode(&encode(b"", Some(sock)).unwrap(), Some(sock)).unwrap();
    assert!(d.payload.is_empty());
}

#[test]
fn second_decode_of_same_credential_is_a_replay() {
    let Some(sock) = munged() else { return };
    let cred = encode(b"once", Some(sock)).unwrap();
    decode(&cred, Some(sock)).unwrap();
    let err = decode(&cred, Some(sock)).unwrap_err();
    assert!(matches!(err, MungeError::Replayed(_)), "{err:?}");
    assert!(err.is_credential_error());
}

#[test]
fn credential_with_one_second_ttl_expires() {
    let Some(sock) = munged() else { return };
    let cred = encode_with(
        b"",
        &EncodeOptions {
            socket: Some(sock),
            ttl: Some(Duration::from_secs(1)),
            ..Default::default()
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let err = decode(&cred, Some(sock)).unwrap_err();
    assert!(matches!(err, MungeError::Expired(_)), "{err:?}");
}

#[test]
fn garbage_and_tampered_credentials_are_invalid() {
    let Some(sock) = munged() else { return };
    for bad in ["", "hello", "MUNGE:AAAA:", "MUNGE:@@@@:"] {
        let err = decode(bad, Some(sock)).unwrap_err();
        assert!(matches!(err, MungeError::Invalid(_)), "{bad:?}: {err:?}");
    }
    let cred = encode(b"payload", Some(sock)).unwrap();
    // Flip one base64 character in the middle of the body.
    let mut bytes = cred.into_bytes();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let err = decode(std::str::from_utf8(&bytes).unwrap(), Some(sock)).unwrap_err();
    assert!(err.is_credential_error(), "{err:?}");
}

#[test]
fn missing_socket_is_reported_as_munged_unavailable() {
    let path = Path::new("/nonexistent/munge.socket");
    let err = encode(b"", Some(path)).unwrap_err();
    match &err {
        MungeError::SocketUnavailable { socket, .. } => {
            assert_eq!(socket, "/nonexistent/munge.socket")
        }
        other => panic!("expected SocketUnavailable, got {other:?}"),
    }
    assert!(err.to_string().contains("is munged running"), "{err}");
    let err = decode("MUNGE:AAAA:", Some(path)).unwrap_err();
    assert!(
        matches!(err, MungeError::SocketUnavailable { .. }),
        "{err:?}"
    );
}

#[test]
fn concurrent_callers_each_get_valid_credentials() {
    let Some(sock) = munged() else { return };
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                for j in 0..10 {
                    let payload = format!("{i}-{j}");
                    let cred = encode(payload.as_bytes(), Some(sock)).unwrap();
                    assert_eq!(
                        decode(&cred, Some(sock)).unwrap().payload,
                        payload.as_bytes()
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Decodes `cred` with the `unmunge` tool running as `user`; returns its STATUS line.
fn unmunge_as(user: &str, sock: &Path, cred: &str) -> String {
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
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.starts_with("STATUS:") || l.contains("rror"))
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn credential_restricted_to_a_uid_is_refused_to_other_users() {
    let Some(sock) = munged() else { return };
    let is_root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !is_root {
        test_skip::skip(
            "munged.rs uid-restricted decode",
            "needs root to decode as other users",
        );
        return;
    }
    // nobody (65534) and daemon (1) exist on every Debian system.
    let encode_for = |uid| {
        encode_with(
            b"",
            &EncodeOptions {
                socket: Some(sock),
                decoder_uid: Some(uid),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let status = unmunge_as("daemon", sock, &encode_for(65534));
    assert!(status.contains("Unauthorized"), "{status}");
    let status = unmunge_as("nobody", sock, &encode_for(65534));
    assert!(status.contains("Success"), "{status}");
}
