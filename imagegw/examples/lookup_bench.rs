//! Load generator for the lookup benchmark: `C` keep-alive connections send
//! `N` GET requests in total, each with a fresh munge credential (encoded
//! before the clock starts, so the client's munge cost is not measured).
//!
//! `lookup_bench URL N C [--no-auth]` prints one line:
//! `requests=.. ok=.. errors=.. secs=.. rps=.. p50_ms=.. p99_ms=..`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Target {
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Target {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    Target {
        host: host.to_owned(),
        path: format!("/{path}"),
    }
}

/// One request on an open connection; returns the status code.
async fn request(
    conn: &mut BufReader<TcpStream>,
    t: &Target,
    cred: Option<&str>,
) -> std::io::Result<u16> {
    let mut req = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", t.path, t.host);
    if let Some(c) = cred {
        req.push_str(&format!("authentication: {c}\r\n"));
    }
    req.push_str("\r\n");
    conn.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    Ok(status)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: lookup_bench URL REQUESTS CONCURRENCY [--no-auth]");
        std::process::exit(2);
    }
    let target = Arc::new(parse_url(&args[0]));
    let total: usize = args[1].parse().expect("REQUESTS");
    let conc: usize = args[2].parse().expect("CONCURRENCY");
    let auth = !args.iter().any(|a| a == "--no-auth");
    // Each bound to the lookup, as the gateway requires.
    let payload = shifter_api::credential::request_payload("GET", &target.path, b"");
    let creds: Arc<Vec<String>> = Arc::new(if auth {
        (0..total)
            .map(|_| {
                munge_sys::encode(payload.as_bytes(), None)
                    .expect("munge encode (is munged running?)")
            })
            .collect()
    } else {
        Vec::new()
    });
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (target, creds, next, errors) =
            (target.clone(), creds.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut conn = BufReader::new(TcpStream::connect(&target.host).await.expect("connect"));
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t0 = Instant::now();
                let cred = creds.get(i).map(String::as_str);
                match request(&mut conn, &target, cred).await {
                    Ok(200) => lat.push(t0.elapsed()),
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = BufReader::new(
                            TcpStream::connect(&target.host).await.expect("reconnect"),
                        );
                    }
                }
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "requests={total} ok={} errors={} secs={secs:.2} rps={:.0} p50_ms={:.2} p99_ms={:.2}",
        lat.len(),
        errors.load(Ordering::Relaxed),
        lat.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
}
