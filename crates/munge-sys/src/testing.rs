//! A munged for tests of this crate and of its users (`test-utils` feature):
//! the system's when it answers, else a private one started for this test
//! process, so Munge tests really run wherever munged is installed, even before
//! anything has started the system daemon.
//!
//! The private daemon gets its own key and socket in a per-process directory
//! and is started under `setpriv --pdeathsig KILL` from a thread that lives as
//! long as the process, so it dies with the test binary and never lingers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cred::{encode, DEFAULT_SOCKET};

const MUNGED: &str = "/usr/sbin/munged";

/// A socket of a working munged, or `None` after a loud notice explaining why
/// there is none (then the caller skips its test).
pub fn munged() -> Option<&'static Path> {
    static SOCKET: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = SOCKET.get_or_init(|| {
        // MUNGE_SYS_TEST_PRIVATE=1 exercises the private daemon even where
        // the system one runs.
        let force_private = std::env::var_os("MUNGE_SYS_TEST_PRIVATE").is_some();
        if !force_private && encode(b"", Some(Path::new(DEFAULT_SOCKET))).is_ok() {
            return Some(PathBuf::from(DEFAULT_SOCKET));
        }
        match start_private() {
            Ok(p) => Some(p),
            Err(why) => {
                test_skip::skip(
                    "Munge test",
                    &format!("munged is not running at {DEFAULT_SOCKET} and a private one could not be started: {why}"),
                );
                None
            }
        }
    });
    found.as_deref()
}

fn start_private() -> Result<PathBuf, String> {
    if !Path::new(MUNGED).exists() {
        return Err(format!("{MUNGED} is not installed (apt-get install munge)"));
    }
    remove_stale_dirs();
    let dir = std::env::temp_dir().join(format!("munge-sys-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    // munged insists every directory above its socket is searchable by all.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    let key = dir.join("munge.key");
    let st = Command::new("mungekey")
        .arg("--create")
        .arg("--keyfile")
        .arg(&key)
        .status()
        .map_err(|e| format!("cannot run mungekey: {e}"))?;
    if !st.success() {
        return Err(format!("mungekey --create failed ({st})"));
    }
    let socket = dir.join("munge.socket");
    let log = std::fs::File::create(dir.join("munged.out")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", MUNGED, "--foreground", "--force"])
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--key-file={}", key.display()))
        .arg(format!("--pid-file={}", dir.join("munged.pid").display()))
        .arg(format!("--seed-file={}", dir.join("munged.seed").display()))
        .arg(format!("--log-file={}", dir.join("munged.log").display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    let (tx, rx) = std::sync::mpsc::channel();
    // pdeathsig fires when the *thread* that forked exits, so the daemon is
    // started from a thread that waits on it for the rest of the process.
    std::thread::Builder::new()
        .name("private-munged".into())
        .spawn(move || match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = tx.send(Err(format!("cannot start munged: {e}")));
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())??;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if encode(b"", Some(&socket)).is_ok() {
            eprintln!(
                "(munge-sys tests: using a private munged at {})",
                socket.display()
            );
            return Ok(socket);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = std::fs::read_to_string(dir.join("munged.out")).unwrap_or_default();
    Err(format!(
        "private munged did not answer within 10 s: {}",
        out.trim()
    ))
}

/// Directories of earlier test processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("munge-sys-test-"))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
