//! A tiny in-process HTTP server that plays a gateway in tests (of this crate
//! and of its users): each request gets the next canned reply, and every
//! request is recorded. Only with the `test-utils` feature.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// One request as the fake gateway received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The `authentication` header.
    pub auth: Option<String>,
    pub body: String,
}

/// A gateway on 127.0.0.1 answering with canned `(status, body)` replies in
/// order; the last reply repeats. The server thread lives as long as the test.
#[derive(Debug)]
pub struct FakeGateway {
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeGateway {
    pub fn start(replies: Vec<(u16, String)>) -> FakeGateway {
        Self::serve(replies.into_iter().map(|(s, b)| (s, b, None)).collect())
    }

    /// A gateway that answers every request with a redirect to `location`.
    pub fn redirecting(location: &str) -> FakeGateway {
        Self::serve(vec![(302, String::new(), Some(location.to_owned()))])
    }

    fn serve(replies: Vec<(u16, String, Option<String>)>) -> FakeGateway {
        assert!(
            !replies.is_empty(),
            "a fake gateway needs at least one reply"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { break };
                let (status, body, location) = replies[i.min(replies.len() - 1)].clone();
                // Recorded before answering: a client that got its answer
                // must find its request in the log.
                if let Some(seen) = read_request(&stream) {
                    log.lock().expect("log lock").push(seen);
                    respond(stream, status, &body, location.as_deref());
                }
            }
        });
        FakeGateway { url, seen }
    }

    /// Requests received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log lock").clone()
    }
}

/// The URL of a port nothing listens on (connection refused).
pub fn dead_gateway() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", l.local_addr().expect("local addr"));
    drop(l);
    url
}

/// The URL of a server that accepts connections and never answers (timeouts).
pub fn silent_gateway() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://{}", l.local_addr().expect("local addr"));
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    url
}

/// A JSON image record with the given id and status, for canned replies.
pub fn record_json(id: &str, tag: &str, status: &str, message: &str) -> String {
    serde_json::json!({
        "id": id, "system": "tb", "itype": "docker", "tag": [tag],
        "status": status, "status_message": message, "last_pull": 1_795_866_055_i64,
        "size": 10_485_760,
        "progress": {"bytes_downloaded": 5_242_880, "bytes_total": 10_485_760, "bytes_converted": 0}
    })
    .to_string()
}

fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut auth = None;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "authentication" => auth = Some(v.trim().to_owned()),
            "content-length" => len = v.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        auth,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn respond(mut stream: TcpStream, status: u16, body: &str, location: Option<&str>) {
    let location = location
        .map(|l| format!("location: {l}\r\n"))
        .unwrap_or_default();
    // The client may have gone (timeouts in tests): nothing to do then.
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{location}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}
