//! The Munge payload of a gateway credential: which service and protocol it
//! is for, and the one request it authorises. munged names the caller; the
//! payload keeps a credential from being useful anywhere else: one minted for
//! another Munge service (another tool's `munge -n`, a job's own credential)
//! carries no payload or another one, and one captured from a request cannot
//! be spent on a different method, path, query or body.
//!
//! The payload is one line of ASCII, fields separated by single spaces:
//!
//! ```text
//! shifter-imagegw v1 <METHOD> <PATH?QUERY> <hex sha256(body)>
//! ```
//!
//! `PATH?QUERY` is the request target as the gateway receives it (origin
//! form, percent-encoded exactly as sent; `?QUERY` only when there is one),
//! so it never contains a space. The body hash is over the exact bytes sent,
//! the hash of nothing for an empty body.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// The service and protocol version every gateway credential starts with.
pub const PURPOSE: &str = "shifter-imagegw v1";

/// Longest payload the gateway reads: a request target is far shorter, and
/// anything longer is not ours.
pub const MAX_PAYLOAD: usize = 16 * 1024;

/// Lowercase hex of the sha256 of `body`.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The payload for one request whose body has the given sha256 (hex).
pub fn payload_for_digest(method: &str, path_and_query: &str, body_sha256_hex: &str) -> String {
    format!("{PURPOSE} {method} {path_and_query} {body_sha256_hex}")
}

/// The payload a client puts into the credential for one request.
pub fn request_payload(method: &str, path_and_query: &str, body: &[u8]) -> String {
    payload_for_digest(method, path_and_query, &body_sha256(body))
}

/// Why a credential's payload does not authorise the request it came with.
/// Every message names what the client must do differently, and never more
/// of the payload than the caller's own method and path.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("the munge credential has no payload: it was not made for the image gateway (plain `munge -n`?); use shifterimg or a client that binds each credential to its request")]
    Missing,
    #[error("the munge credential was made for another service or protocol version, not for `{PURPOSE}`")]
    OtherPurpose,
    #[error(
        "the munge credential's payload is malformed: expected `{PURPOSE} METHOD PATH SHA256`"
    )]
    Malformed,
    #[error("the munge credential was made for {signed} and cannot be used for {received}")]
    OtherRequest { signed: String, received: String },
    #[error("the request body does not match the sha256 the munge credential was made for")]
    OtherBody,
}

/// The three things a payload binds, parsed from its text.
#[derive(Debug, PartialEq, Eq)]
pub struct Binding<'a> {
    pub method: &'a str,
    pub path_and_query: &'a str,
    pub body_sha256: &'a str,
}

/// Parses a payload; it must be exactly [`PURPOSE`] followed by the three fields.
pub fn parse_payload(payload: &[u8]) -> Result<Binding<'_>, PayloadError> {
    if payload.is_empty() {
        return Err(PayloadError::Missing);
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(PayloadError::Malformed);
    }
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::OtherPurpose)?;
    let rest = text
        .strip_prefix(PURPOSE)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or(PayloadError::OtherPurpose)?;
    let mut fields = rest.split(' ');
    let (Some(method), Some(path_and_query), Some(body_sha256), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(PayloadError::Malformed);
    };
    let method_ok = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
    let path_ok =
        path_and_query.starts_with('/') && path_and_query.bytes().all(|b| b.is_ascii_graphic());
    let digest_ok = body_sha256.len() == 64
        && body_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !(method_ok && path_ok && digest_ok) {
        return Err(PayloadError::Malformed);
    }
    Ok(Binding {
        method,
        path_and_query,
        body_sha256,
    })
}

/// Checks that `payload` authorises exactly this request: the gateway's
/// purpose, the method, the request target and the body's sha256 (hex).
pub fn verify_payload(
    payload: &[u8],
    method: &str,
    path_and_query: &str,
    body_sha256_hex: &str,
) -> Result<(), PayloadError> {
    let b = parse_payload(payload)?;
    if b.method != method || b.path_and_query != path_and_query {
        return Err(PayloadError::OtherRequest {
            signed: shorten(&format!("{} {}", b.method, b.path_and_query)),
            received: shorten(&format!("{method} {path_and_query}")),
        });
    }
    // Both are hashes of public data; a plain comparison leaks nothing.
    if b.body_sha256 != body_sha256_hex {
        return Err(PayloadError::OtherBody);
    }
    Ok(())
}

/// Request targets in messages are cut short: a refused 8 KB path helps nobody.
fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn payload_names_purpose_method_target_and_body_hash() {
        assert_eq!(
            request_payload("GET", "/api/list/tb/", b""),
            format!("shifter-imagegw v1 GET /api/list/tb/ {EMPTY}")
        );
        let p = request_payload("POST", "/api/pull/tb/docker/a%3A1/?x=1", br#"{"a":1}"#);
        assert_eq!(
            p,
            format!(
                "shifter-imagegw v1 POST /api/pull/tb/docker/a%3A1/?x=1 {}",
                body_sha256(br#"{"a":1}"#)
            )
        );
    }

    #[test]
    fn the_payload_of_a_request_verifies_against_that_request() {
        let body = br#"{"allowed_uids":"1"}"#;
        let p = request_payload("POST", "/api/pull/tb/docker/x/", body);
        assert_eq!(
            verify_payload(
                p.as_bytes(),
                "POST",
                "/api/pull/tb/docker/x/",
                &body_sha256(body)
            ),
            Ok(())
        );
    }

    #[test]
    fn a_credential_without_payload_is_refused_as_not_for_the_gateway() {
        assert_eq!(
            verify_payload(b"", "GET", "/api/list/tb/", EMPTY),
            Err(PayloadError::Missing)
        );
    }

    #[test]
    fn a_payload_for_another_service_or_version_is_refused() {
        for other in [
            format!("slurm v1 GET /api/list/tb/ {EMPTY}"),
            format!("shifter-imagegw v2 GET /api/list/tb/ {EMPTY}"),
            format!("shifter-imagegwv1 GET /api/list/tb/ {EMPTY}"),
            "hello".to_owned(),
        ] {
            assert_eq!(
                verify_payload(other.as_bytes(), "GET", "/api/list/tb/", EMPTY),
                Err(PayloadError::OtherPurpose),
                "{other}"
            );
        }
        assert_eq!(
            verify_payload(&[0xff, 0xfe], "GET", "/", EMPTY),
            Err(PayloadError::OtherPurpose)
        );
    }

    #[test]
    fn a_payload_for_another_method_path_or_query_is_refused_naming_both() {
        let p = request_payload("GET", "/api/lookup/tb/docker/a/", b"");
        for (m, path) in [
            ("POST", "/api/lookup/tb/docker/a/"),
            ("GET", "/api/lookup/tb/docker/b/"),
            ("GET", "/api/lookup/tb/docker/a/?x"),
            ("GET", "/api/lookup/tb/docker/a"),
        ] {
            let e = verify_payload(p.as_bytes(), m, path, EMPTY).unwrap_err();
            assert_eq!(
                e,
                PayloadError::OtherRequest {
                    signed: "GET /api/lookup/tb/docker/a/".into(),
                    received: format!("{m} {path}"),
                }
            );
            assert!(e.to_string().contains("cannot be used for"), "{e}");
        }
    }

    #[test]
    fn a_payload_for_another_body_is_refused() {
        let p = request_payload("POST", "/api/login/tb/", br#"{"password":"a"}"#);
        assert_eq!(
            verify_payload(
                p.as_bytes(),
                "POST",
                "/api/login/tb/",
                &body_sha256(br#"{"password":"b"}"#)
            ),
            Err(PayloadError::OtherBody)
        );
    }

    #[test]
    fn malformed_payloads_are_refused() {
        for bad in [
            "shifter-imagegw v1 ".to_owned(),
            format!("shifter-imagegw v1 GET /a {EMPTY} extra"),
            format!("shifter-imagegw v1 GET  /a {EMPTY}"),
            format!("shifter-imagegw v1 get /a {EMPTY}"),
            format!("shifter-imagegw v1 GET a {EMPTY}"),
            "shifter-imagegw v1 GET /a 1234".to_owned(),
            format!("shifter-imagegw v1 GET /a {}", EMPTY.to_uppercase()),
            format!("shifter-imagegw v1 GET /a {EMPTY}\n"),
        ] {
            assert_eq!(
                parse_payload(bad.as_bytes()),
                Err(PayloadError::Malformed),
                "{bad:?}"
            );
        }
        let huge = format!("{PURPOSE} GET /{} {EMPTY}", "a".repeat(MAX_PAYLOAD));
        assert_eq!(parse_payload(huge.as_bytes()), Err(PayloadError::Malformed));
    }

    #[test]
    fn long_targets_are_shortened_in_messages() {
        let long = format!("/{}", "é".repeat(300));
        let s = shorten(&long);
        assert!(s.len() <= 204 && s.ends_with('…'), "{s}");
    }
}
