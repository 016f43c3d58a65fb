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
    body: Option<&serde_json::Value>,
    timeout: Duration,
) -> Attempt {
    let req = agent
        .request(method, url)
        .set("authentication", credential)
        .set("accept", "application/json");
    let res = match body {
        Some(b) => req.send_json(b),
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
