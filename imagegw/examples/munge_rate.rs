//! Measures how many credentials munged decodes per second with T threads
//! (the ceiling for authenticated requests): `munge_rate N T`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let t: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let creds: Vec<String> = (0..n)
        .map(|_| munge_sys::encode(b"", None).expect("munge encode"))
        .collect();
    let work = Arc::new(Mutex::new(creds));
    let start = Instant::now();
    let threads: Vec<_> = (0..t)
        .map(|_| {
            let work = work.clone();
            std::thread::spawn(move || loop {
                let c = work.lock().unwrap().pop();
                let Some(c) = c else { break };
                munge_sys::decode(&c, None).expect("decode");
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "decoded={n} threads={t} secs={secs:.2} per_sec={:.0}",
        n as f64 / secs
    );
}
