//! A throwaway PostgreSQL server for store tests: its own data directory and
//! socket directory, a private loopback port, run as the `postgres` account
//! (the server refuses root), stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn find_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn as_postgres(bin: &Path, args: &[&str]) -> std::process::Output {
    Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin)
        .args(args)
        .output()
        .expect("runuser runs")
}

impl TestPostgres {
    /// Starts a server, or prints why not and returns None (not root, no server installed).
    pub fn start() -> Option<TestPostgres> {
        if !nix::unistd::geteuid().is_root() {
            test_skip::skip(
                "postgres store test",
                "needs root to start a server as the postgres account",
            );
            return None;
        }
        let Some(bin) = find_bin() else {
            test_skip::skip(
                "postgres store test",
                "no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)",
            );
            return None;
        };
        if nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .is_none()
        {
            test_skip::skip("postgres store test", "no postgres account");
            return None;
        }
        let base = std::env::var_os("SHIFTER_TB")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("imagegw-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown {}", dir.display());
        let data = dir.join("data");
        let d = data.to_str().unwrap();
        let out = as_postgres(
            &bin.join("initdb"),
            &["-D", d, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            dir.display()
        );
        let log = dir.join("server.log");
        let out = as_postgres(
            &bin.join("pg_ctl"),
            &[
                "-D",
                d,
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        let pg = TestPostgres { dir, bin, port };
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
