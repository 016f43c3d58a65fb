//! One HTTP exchange with one gateway, reduced to what failover needs to know:
//! an answer to return, or a reason to try the next gateway.

use std::error::Error as _;
use std::io;
use std::time::Duration;

/// The result of asking one gateway.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// 2xx, with the body.
    Success(String),
    /// 4xx: the gateway understood and refused; final.
    Refused { status: u16, body: String },
    /// Unreachable, timed out, 5xx or otherwise unusable: try the next gateway.
    Skip(String),
}

pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(timeout)
        .timeout(timeout)
        // The credential header must not follow a redirect to another host.
        .redirects(0)
        .user_agent(concat!("shifter-gw-client/", env!("CARGO_PKG_VERSION")))
        .build()
}

pub(crate) fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    credential: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Attempt {
    let req = agent
        .request(method, url)
        .set("authentication", credential)
        .set("accept", "application/json");
    // The body goes out as the very bytes the credential's payload hashed.
    let res = match body {
        Some(b) => req.set("content-type", "application/json").send_bytes(b),
        None => req.call(),
    };
    match res {
        Ok(resp) if (200..300).contains(&resp.status()) => match resp.into_string() {
            Ok(text) => Attempt::Success(text),
            Err(e) => Attempt::Skip(describe_io(&e, timeout, "reading the reply")),
        },
        Ok(resp) => Attempt::Skip(format!(
            "unexpected {} {} (redirect to {:?}?)",
            resp.status(),
            resp.status_text(),
            resp.header("location").unwrap_or("nowhere")
        )),
        Err(ureq::Error::Status(status, resp)) => {
            let text = resp.into_string().unwrap_or_default();
            if status >= 500 {
                Attempt::Skip(describe_5xx(status, &text))
            } else {
                Attempt::Refused { status, body: text }
            }
        }
        Err(ureq::Error::Transport(t)) => Attempt::Skip(describe_transport(&t, timeout)),
    }
}

/// 5xx bodies carry a generic message by design; show it with the status.
fn describe_5xx(status: u16, body: &str) -> String {
    match serde_json::from_str::<shifter_api::ApiErrorBody>(body) {
        Ok(b) => format!("HTTP {status}: {}", b.message),
        Err(_) => format!("HTTP {status}"),
    }
}

fn describe_transport(t: &ureq::Transport, timeout: Duration) -> String {
    let mut src = t.source();
    while let Some(e) = src {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return describe_io(io, timeout, "connecting");
        }
        src = e.source();
    }
    match t.kind() {
        ureq::ErrorKind::Dns => format!("cannot resolve the host name: {t}"),
        ureq::ErrorKind::InvalidUrl | ureq::ErrorKind::UnknownScheme => {
            format!("invalid URL: {t}")
        }
        _ => t.to_string(),
    }
}

fn describe_io(e: &io::Error, timeout: Duration, doing: &str) -> String {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("timed out after {}", human_duration(timeout))
        }
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof => {
            "connection closed without a reply".to_owned()
        }
        _ => format!("{doing}: {e}"),
    }
}

/// Whether a log record of an HTTP library may be printed: ureq writes every
/// request's headers (our `authentication` credential among them; it redacts
/// only `Authorization`) at debug level under `ureq::unit`, so nothing of
/// ureq's above `info` is ever shown, whatever filter the user asked for.
/// Binaries add this as a filter of their own beside the user's `EnvFilter`
/// (a directive such as `ureq=info` would lose to a user's `ureq::unit=debug`).
pub fn http_log_allowed(target: &str, level: &tracing::Level) -> bool {
    let http = target == "ureq" || target.starts_with("ureq::");
    !http || *level <= tracing::Level::INFO
}

pub(crate) fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ureq_logs_above_info_are_never_allowed_whatever_the_target() {
        use tracing::Level;
        for t in ["ureq", "ureq::unit", "ureq::stream"] {
            assert!(!http_log_allowed(t, &Level::DEBUG), "{t}");
            assert!(!http_log_allowed(t, &Level::TRACE), "{t}");
            assert!(http_log_allowed(t, &Level::INFO), "{t}");
            assert!(http_log_allowed(t, &Level::WARN), "{t}");
        }
        assert!(http_log_allowed("gw_client::client", &Level::TRACE));
        assert!(http_log_allowed("ureqx", &Level::TRACE));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5 s");
        assert_eq!(human_duration(Duration::from_millis(300)), "300 ms");
    }

    #[test]
    fn server_errors_show_status_and_generic_message() {
        assert_eq!(
            describe_5xx(503, r#"{"error":"overloaded","message":"try again later"}"#),
            "HTTP 503: try again later"
        );
        assert_eq!(describe_5xx(500, "<html>"), "HTTP 500");
    }
}
