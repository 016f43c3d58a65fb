//! A gateway owned by one test: its own port, store, blob cache, work and image
//! directories under `$SHIFTER_TB/gw-<name>`, run as the cluster's gateway account
//! and killed when dropped. The gateway, hostile, faults and load tiers all start
//! theirs through [`Gateway::start`], varying only what [`GatewayOptions`] says.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{chown, gid_of, Testbed};

/// How long one request, a start or a stop may take.
const T: Duration = Duration::from_secs(20);
/// How long a pull polled to its end may take.
const PULL: Duration = Duration::from_secs(120);

/// What differs between the tests' gateways; the default is a gateway of the
/// cluster's registry with everything in its own directory.
#[derive(Debug, Default, Clone)]
pub struct GatewayOptions {
    /// The registry it pulls from (`host:port`); the cluster's by default.
    pub registry: Option<String>,
    /// Another store URL (`postgres://…`); its own SQLite file by default.
    pub store: Option<String>,
    /// Another (shared, or size-capped) image directory.
    pub images: Option<PathBuf>,
    /// Another (size-capped) blob cache.
    pub cache: Option<PathBuf>,
    /// A private munged to trust instead of the cluster's.
    pub munge_socket: Option<PathBuf>,
    /// Lines for the `[limits]` table.
    pub limits: String,
    /// `RUST_LOG` of the gateway process; `info` by default.
    pub rust_log: Option<String>,
    /// More config after everything else (e.g. other `[registries]` sections).
    pub extra: String,
}

#[derive(Debug)]
pub struct Gateway {
    pub tb: Testbed,
    /// `$SHIFTER_TB/gw-<name>`: config, log, store, cache and work directory.
    pub dir: PathBuf,
    pub port: u16,
    /// The `[systems.*]` name, as in the API paths.
    pub system: String,
    images: PathBuf,
    munge_socket: Option<PathBuf>,
    rust_log: String,
    child: Option<Child>,
}

impl Gateway {
    /// A fresh gateway for test `name` (its directory is emptied first), up and
    /// answering `/healthz`.
    pub fn start(tb: &Testbed, name: &str, opts: GatewayOptions) -> Gateway {
        let bin = tb.bin_dir().join("shifter-imagegw");
        assert!(
            bin.exists(),
            "{} missing: cargo build -p shifter-imagegw",
            bin.display()
        );
        let dir = tb.dir.join(format!("gw-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        let gw_user = tb.var("SHIFTER_GW_USER").to_owned();
        for sub in ["", "images", "state", "cache", "work"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).unwrap();
            chown(&gw_user, &p);
        }
        let images = opts.images.unwrap_or_else(|| dir.join("images"));
        let cache = opts.cache.unwrap_or_else(|| dir.join("cache"));
        let store = opts
            .store
            .unwrap_or_else(|| format!("sqlite://{}/state/gw.sqlite", dir.display()));
        let munge = opts
            .munge_socket
            .as_ref()
            .map(|s| format!("munge_socket = \"{}\"\n", s.display()))
            .unwrap_or_default();
        let port = crate::free_port();
        let config = format!(
            r#"listen = "127.0.0.1:{port}"
default_registry = "{registry}"
workers = 2
store = "{store}"
work_dir = "{dir}/work"
cache_dir = "{cache}"
[limits]
{limits}
[systems.{system}]
image_dir = "{images}"
{munge}admins = [0]
import_users = ["{user}", "{user2}"]
[registries."{registry}"]
plain_http = true
internal = true
{extra}"#,
            registry = opts.registry.as_deref().unwrap_or(tb.registry()),
            dir = dir.display(),
            cache = cache.display(),
            limits = opts.limits,
            system = tb.var("SHIFTER_GW_SYSTEM"),
            images = images.display(),
            user = tb.user(),
            user2 = tb.user2(),
            extra = opts.extra,
        );
        std::fs::write(dir.join("imagegw.toml"), config).unwrap();
        let mut gw = Gateway {
            tb: tb.clone(),
            dir,
            port,
            system: tb.var("SHIFTER_GW_SYSTEM").to_owned(),
            images,
            munge_socket: opts.munge_socket,
            rust_log: opts.rust_log.unwrap_or_else(|| "info".into()),
            child: None,
        };
        gw.spawn();
        gw
    }

    /// Starts the process (again) on the same config and waits for `/healthz`.
    pub fn spawn(&mut self) {
        let gw_user = self.tb.var("SHIFTER_GW_USER").to_owned();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("gateway.log"))
            .unwrap();
        // setpriv execs, so the child's PID is the gateway's and kill -9 hits it.
        let child = Command::new("setpriv")
            .arg(format!("--reuid={gw_user}"))
            .arg(format!("--regid={}", gid_of(&gw_user)))
            .arg("--init-groups")
            .arg(self.tb.bin_dir().join("shifter-imagegw"))
            .arg("--config")
            .arg(self.dir.join("imagegw.toml"))
            .env("RUST_LOG", &self.rust_log)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the gateway");
        self.child = Some(child);
        let url = self.url("/healthz");
        // Generous: under the load tier the machine is busy.
        let up = Testbed::wait_until(Duration::from_secs(30), || ureq::get(&url).call().is_ok());
        assert!(up, "gateway did not answer /healthz:\n{}", self.log());
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                assert!(
                    start.elapsed() < T,
                    "gateway ignored SIGTERM:\n{}",
                    self.log_tail()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn kill_9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The gateway's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Everything the gateway logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }

    /// The last 40 lines: what explains a failure without drowning the message.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `http://127.0.0.1:<port>` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn images(&self) -> PathBuf {
        self.images.clone()
    }

    /// The SQLite store.
    pub fn db(&self) -> PathBuf {
        self.dir.join("state/gw.sqlite")
    }

    /// A fresh credential for `user` (`root` for the admin) from the munged this
    /// gateway trusts, bound to one request (`body` as [`Gateway::call`] sends it).
    pub fn cred_for(&self, user: &str, method: &str, path: &str, body: Option<&Value>) -> String {
        let payload = request_payload(method, path, body);
        self.munge(user, &["-s", &payload])
    }

    /// A fresh credential for `user` with no payload (plain `munge -n`), as
    /// any other Munge client makes them: the gateway must refuse it.
    pub fn cred_unbound(&self, user: &str) -> String {
        self.munge(user, &["-n"])
    }

    fn munge(&self, user: &str, input: &[&str]) -> String {
        let mut args = vec!["munge"];
        args.extend(input);
        let sock;
        if let Some(s) = &self.munge_socket {
            sock = s.display().to_string();
            args.extend(["-S", &sock]);
        }
        let r = if user == "root" {
            self.tb.run_root(&args, T)
        } else {
            self.tb.run_as(user, &args, T)
        };
        r.assert_ok();
        r.stdout.trim().to_owned()
    }

    /// One request; the status and the body (JSON, or the text as a JSON string).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        cred: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = ureq::request(method, &self.url(path)).timeout(T);
        if let Some(c) = cred {
            req = req.set("authentication", c);
        }
        // The bytes [`Gateway::cred_for`] hashed.
        let result = match body {
            Some(b) => req
                .set("content-type", "application/json")
                .send_bytes(&body_bytes(b)),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}\n{}", self.log_tail()),
        };
        let status = resp.status();
        let mut text = String::new();
        resp.into_reader().read_to_string(&mut text).unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// [`Gateway::call`] with a fresh credential of `user`.
    pub fn as_user(
        &self,
        user: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let c = self.cred_for(user, method, path, body);
        self.call(method, path, Some(&c), body)
    }

    /// One pull request for `image` (a path from [`crate::image_path`]); must be
    /// accepted.
    pub fn pull(&self, user: &str, image: &str, body: Option<&Value>) -> Value {
        let (st, v) = self.as_user(
            user,
            "POST",
            &format!("/api/pull/{}/{image}/", self.system),
            body,
        );
        assert_eq!(st, 200, "pull {image}: {v}\n{}", self.log_tail());
        v
    }

    /// Pulls and polls (by re-posting, as clients do) until the status is final.
    pub fn pull_until_final(&self, user: &str, image: &str, body: Option<&Value>) -> Value {
        let start = Instant::now();
        loop {
            let v = self.pull(user, image, body);
            if ["READY", "FAILURE"].contains(&v["status"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(start.elapsed() < PULL, "pull of {image} stuck: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn lookup(&self, user: &str, image: &str) -> (u16, Value) {
        self.as_user(
            user,
            "GET",
            &format!("/api/lookup/{}/{image}/", self.system),
            None,
        )
    }

    /// The value of the first Prometheus sample whose name and labels end with
    /// `suffix` (0 when the gateway has not reported it yet).
    pub fn metric(&self, suffix: &str) -> f64 {
        let (_, v) = self.call("GET", "/metrics", None, None);
        let text = v.as_str().expect("/metrics is text");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .find(|(name, _)| name.ends_with(suffix))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0.0)
    }

    /// Names in the image directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.images)
            .unwrap_or_else(|e| panic!("{}: {e}", self.images.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Only complete publications: `<id>.json` and `<id>.squashfs` pairs, no
    /// staging or temporary names, no squashfs without its meta.
    #[track_caller]
    pub fn assert_nothing_half_written(&self) {
        let files = self.files();
        for f in &files {
            let ok = !f.starts_with('.') && (f.ends_with(".json") || f.ends_with(".squashfs"));
            assert!(ok, "leftover {f} in the image dir: {files:?}");
            if let Some(id) = f.strip_suffix(".squashfs") {
                assert!(
                    files.contains(&format!("{id}.json")),
                    "{f} without its meta: {files:?}"
                );
            }
        }
    }
}

/// How [`Gateway::call`] sends a JSON body.
fn body_bytes(body: &Value) -> Vec<u8> {
    serde_json::to_vec(body).expect("JSON values serialise")
}

/// The credential payload of one request (docs/gateway.md, "Credentials").
pub fn request_payload(method: &str, path: &str, body: Option<&Value>) -> String {
    let bytes = body.map(body_bytes).unwrap_or_default();
    shifter_api::credential::request_payload(method, path, &bytes)
}

/// `docker/<registry>/<repo:tag>` of the cluster's registry, percent-encoded for
/// a gateway API path.
pub fn image_path(tb: &Testbed, repo_tag: &str) -> String {
    let full = format!("{}/{repo_tag}", tb.registry());
    let enc: String = full
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("docker/{enc}")
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill_9();
    }
}
