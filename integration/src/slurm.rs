//! Helpers shared by the tests that drive the Slurm plugin and the gateway
//! through the cluster: one-at-a-time access, pulls through `shifterimg`,
//! submit-time refusals and the leak check every image test ends with.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::{Run, Testbed};

/// A refusal at submit must come back this fast (nothing was queued).
pub const SUBMIT_FAILS_WITHIN: Duration = Duration::from_secs(15);

static CLUSTER: Mutex<()> = Mutex::new(());

/// Serialises the tests of one test binary that share the cluster, so a leak
/// check never sees another test's step. A panicking holder does not poison it.
pub fn serial() -> MutexGuard<'static, ()> {
    CLUSTER.lock().unwrap_or_else(|p| p.into_inner())
}

/// Panics unless `r` failed quickly, without reaching a node, and said `needle`.
#[track_caller]
pub fn assert_refused_at_submit(r: &Run, needle: &str) {
    r.assert_failed();
    assert!(
        r.stderr.contains(needle),
        "expected {needle:?} in stderr: {r}"
    );
    assert!(
        !r.stderr.contains("slurmstepd"),
        "the request reached a node instead of failing at submit: {r}"
    );
    assert!(
        r.elapsed < SUBMIT_FAILS_WITHIN,
        "refusal took {:?}: {r}",
        r.elapsed
    );
}

impl Testbed {
    /// The cluster's gateway URL, or None after a loud skip notice (a failure
    /// when the end-to-end tier is required).
    pub fn gateway(&self) -> Option<String> {
        match self.var_opt("SHIFTER_GATEWAY") {
            Some(g) => Some(g.to_owned()),
            None => {
                if std::env::var("SHIFTER_E2E_REQUIRED").as_deref() == Ok("1") {
                    panic!("SHIFTER_GATEWAY missing from the cluster env: the gateway hook did not run");
                }
                test_skip::skip(
                    "image test",
                    "no image gateway in this cluster (SHIFTER_GATEWAY unset)",
                );
                None
            }
        }
    }

    /// The runtime's `shifter.toml` of the cluster.
    pub fn config_path(&self) -> String {
        self.var_opt("SHIFTER_CONFIG")
            .map(str::to_owned)
            .unwrap_or_else(|| self.dir.join("etc/shifter.toml").display().to_string())
    }

    /// Runs `shifterimg ARGS` as `user` against the cluster's config.
    pub fn shifterimg(&self, user: &str, args: &[&str]) -> Run {
        self.shifterimg_within(user, args, Duration::from_secs(180))
    }

    /// [`Testbed::shifterimg`], killed after `timeout`.
    pub fn shifterimg_within(&self, user: &str, args: &[&str], timeout: Duration) -> Run {
        let bin = self.bin_dir().join("shifterimg");
        let cfg = self.config_path();
        let mut all = vec![bin.to_str().unwrap(), "--config", cfg.as_str()];
        all.extend_from_slice(args);
        self.run_as(user, &all, timeout)
    }

    /// Pulls `repo:tag` from the cluster's registry as the test user and returns
    /// the reference to pass to `--image`.
    pub fn pulled(&self, repo_tag: &str) -> String {
        let image = format!("docker:{}/{repo_tag}", self.registry());
        self.shifterimg(self.user(), &["pull", &image]).assert_ok();
        image
    }

    /// No loop device of the cluster's files and no squashfs mount on any node
    /// remains, once every job has left the queue.
    #[track_caller]
    pub fn assert_nothing_left(&self) {
        assert!(
            self.wait_queue_empty(Duration::from_secs(60)),
            "jobs still queued"
        );
        let ok = Testbed::wait_until(Duration::from_secs(15), || {
            Testbed::loop_devices_backed_by(&self.dir).is_empty()
        });
        assert!(
            ok,
            "loop devices left behind: {:?}",
            Testbed::loop_devices_backed_by(&self.dir)
        );
        for node in self.nodes() {
            // up.sh records each slurmd's PID; its mountinfo is the node's view.
            let pid_file = self.dir.join("pids").join(format!("slurmd-{node}.pid"));
            let pid = std::fs::read_to_string(&pid_file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", pid_file.display()));
            let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim()))
                .unwrap_or_else(|e| panic!("node {node} (slurmd pid {}) is gone: {e}", pid.trim()));
            assert!(
                !mounts.contains("squashfs"),
                "node {node} still has a squashfs mounted:\n{mounts}"
            );
        }
    }

    /// [`Testbed::assert_nothing_left`], and of per-node caches (backed in
    /// `$SHIFTER_CACHE_DIR`) no loop device (even of an unlinked file), no
    /// backing file and no xfs mount on any node.
    #[track_caller]
    pub fn assert_no_cache_left(&self) {
        self.assert_nothing_left();
        let dir = std::path::PathBuf::from(self.var("SHIFTER_CACHE_DIR"));
        let gone = Testbed::wait_until(Duration::from_secs(15), || {
            Testbed::loop_devices_backed_by(&dir).is_empty()
        });
        assert!(
            gone,
            "cache loop devices left: {:?}",
            Testbed::loop_devices_backed_by(&dir)
        );
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(files.is_empty(), "cache backing files left: {files:?}");
        for node in self.nodes() {
            let pid_file = self.dir.join("pids").join(format!("slurmd-{node}.pid"));
            let pid = std::fs::read_to_string(&pid_file).unwrap();
            let mi = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim())).unwrap();
            assert!(
                !mi.contains(" - xfs "),
                "node {node} still has an xfs mount:\n{mi}"
            );
        }
    }
}
