//! Helpers for the end-to-end tier: find the local cluster started by
//! `integration/cluster/up.sh`, run commands as its users with timeouts, and
//! skip loudly (or fail, in CI) when it is not there.
//!
//! The cluster describes itself in `$SHIFTER_TB/env`, a file of `export KEY=VALUE`
//! lines written by `up.sh` and its `up.d/` hooks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod gateway;
mod host;
pub mod registry;
pub mod report;
pub mod slurm;

pub use gateway::{image_path, Gateway, GatewayOptions};
pub use host::{chown, free_port, gid_of, uid_of};

/// The running local cluster.
#[derive(Debug, Clone)]
pub struct Testbed {
    /// The state directory (`$SHIFTER_TB`).
    pub dir: PathBuf,
    vars: BTreeMap<String, String>,
}

/// What a finished command printed, decoded for assertions.
#[derive(Debug, Clone)]
pub struct Run {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Panics with everything the command printed unless it exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panics unless the command failed.
    #[track_caller]
    pub fn assert_failed(&self) -> &Self {
        assert!(!self.success(), "command unexpectedly succeeded: {self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Testbed {
    /// The cluster, or `None` after printing a loud skip notice. When
    /// `SHIFTER_E2E_REQUIRED=1` (set by `make test`), a missing cluster is a failure.
    pub fn get() -> Option<Testbed> {
        match Self::load() {
            Ok(tb) => Some(tb),
            Err(why) => {
                if std::env::var("SHIFTER_E2E_REQUIRED").as_deref() == Ok("1") {
                    panic!("end-to-end tier required but the cluster is not usable: {why}");
                }
                test_skip::skip(
                    "end-to-end test",
                    &format!("{why}; run `make cluster-up` (or set SHIFTER_TB to a running cluster), or use `make test`"),
                );
                None
            }
        }
    }

    fn load() -> Result<Testbed, String> {
        // The default matches the Makefile's, so a cluster from `make cluster-up` is found.
        let dir = std::env::var_os("SHIFTER_TB")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/shifter-tb"));
        let env_file = dir.join("env");
        let text = std::fs::read_to_string(&env_file)
            .map_err(|e| format!("cannot read {}: {e}", env_file.display()))?;
        let vars = parse_env_file(&text);
        if !nix_is_root() {
            return Err("end-to-end tests must run as root (they switch to the test users)".into());
        }
        Ok(Testbed { dir, vars })
    }

    /// A variable from `$SHIFTER_TB/env`, panicking with a clear message if absent.
    #[track_caller]
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from {}/env", self.dir.display()))
    }

    pub fn var_opt(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// The non-root user tests run as.
    pub fn user(&self) -> &str {
        self.var("SHIFTER_TEST_USER")
    }

    /// A second non-root user, for ACL tests.
    pub fn user2(&self) -> &str {
        self.var("SHIFTER_TEST_USER2")
    }

    /// Slurm node names, e.g. `["n1", "n2"]`.
    pub fn nodes(&self) -> Vec<String> {
        self.var("SHIFTER_NODES")
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// `host:port` of the local registry.
    pub fn registry(&self) -> &str {
        self.var("SHIFTER_REGISTRY")
    }

    /// A directory every test user can write and Slurm can chdir to.
    pub fn workdir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Directory holding the workspace's built binaries and the plugin.
    pub fn bin_dir(&self) -> PathBuf {
        PathBuf::from(self.var("SHIFTER_BIN_DIR"))
    }

    /// Runs `args` as `user` (via runuser, keeping the cluster's environment) in
    /// the shared work directory, killed after `timeout`.
    pub fn run_as(&self, user: &str, args: &[&str], timeout: Duration) -> Run {
        self.run_as_with_env(user, args, &[], timeout)
    }

    pub fn run_as_with_env(
        &self,
        user: &str,
        args: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Run {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", user, "--", "timeout", "-k", "5"])
            .arg(format!("{}", timeout.as_secs().max(1)))
            .args(args);
        self.apply_env(&mut cmd);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.current_dir(self.workdir());
        run(cmd)
    }

    /// Runs `args` as root with the cluster's environment, killed after `timeout`.
    pub fn run_root(&self, args: &[&str], timeout: Duration) -> Run {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5"])
            .arg(format!("{}", timeout.as_secs().max(1)))
            .args(args);
        self.apply_env(&mut cmd);
        cmd.current_dir(self.workdir());
        run(cmd)
    }

    fn apply_env(&self, cmd: &mut Command) {
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
    }

    /// Polls `check` every 100 ms until it returns true or `timeout` passes.
    pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if check() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        check()
    }

    /// Waits for every job of the cluster to leave the queue.
    pub fn wait_queue_empty(&self, timeout: Duration) -> bool {
        Self::wait_until(timeout, || {
            let r = self.run_root(&["squeue", "-h", "-o", "%i"], Duration::from_secs(10));
            r.success() && r.stdout.trim().is_empty()
        })
    }

    /// Loop devices whose backing file lives under `dir` (for leak checks).
    pub fn loop_devices_backed_by(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/sys/block") else {
            return found;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                continue;
            }
            if let Ok(back) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
                if Path::new(back.trim()).starts_with(dir) {
                    found.push(format!("/dev/{name} -> {}", back.trim()));
                }
            }
        }
        found
    }
}

fn run(mut cmd: Command) -> Run {
    let start = Instant::now();
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    Run {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_lines_are_parsed_with_quotes() {
        let m = parse_env_file("# c\nexport A=1\nexport B='x y'\nexport C=\"z\"\nnoise\n");
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "x y");
        assert_eq!(m["C"], "z");
        assert_eq!(m.len(), 3);
    }
}
