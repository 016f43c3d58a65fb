//! The optional per-job sshd inside the container (`enable_sshd = true` and
//! `[sshd]` in the config), so that `ssh <node>` from one node of a job lands
//! in the job's container on another node.
//!
//! Once per step and node, as root: [`plan`] derives the keys, then
//! [`crate::setup::prepare`] (given the plan in its request) installs it,
//! writing into the image's root before any other mount exists and binding
//! the tools before any user volume:
//! - derives the job's keys: an ed25519 client key and host key, each seeded by
//!   HMAC-SHA256 of the site's `key_secret` (a root-only file, the same on every
//!   node) over the job id and uid. Every node of a job thus computes the same
//!   keys without talking to the others, and another job's key is refused;
//! - writes them, with `sshd_config`, `ssh_config` and `known_hosts`, into a
//!   directory only the user can read, bound at [`UDI`]`/sshd`;
//! - binds the host's `sshd`, `ssh` and library directory read-only (nosuid,
//!   nodev) at [`UDI`]`/{sbin/sshd,bin/ssh,lib}`. Both programs run through the
//!   host's dynamic loader with `--library-path`, so the image's own libraries
//!   are never mixed in and an image without libc works;
//! - writes `/etc/ssh/ssh_config` (port, key, pinned host key) and, when the
//!   image has no `ssh`, a `/usr/bin/ssh` that runs the host's client.
//!
//! [`start`] then forks a child that enters the container exactly as a task
//! does (chroot, empty bounding set, no_new_privs), becomes the user with the
//! read-back check, and execs sshd with `-D` in the foreground (`-r`: a re-exec
//! by path would miss the loader). The child is slurmstepd's, so the step's
//! process tracking sees it and its sessions; [`Running::stop`] ends it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::config::Config;
use crate::entry::{drop_to_user, enter, EntryError};
use crate::prepared::PreparedRoot;
use crate::sys::{Create, Handle, MountAttrs, NodeKind, Sys, SysError};
use crate::user::UserInfo;

/// Where the host's tools and the job's ssh files appear in the container
/// (the same place as in Shifter).
pub const UDI: &str = "/opt/udiImage";

/// `[sshd]` in the config. Only read when `enable_sshd = true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshdConfig {
    /// TCP port of every job's sshd (Shifter's default is 1204).
    #[serde(default = "default_port")]
    pub port: u16,
    /// `""`: all addresses. `"hostname"`: the address the node's hostname
    /// resolves to on the node. Anything else: that IP address.
    #[serde(default)]
    pub listen_address: String,
    /// A root-only file (mode 0600 or stricter), identical on every node, that
    /// the job keys are derived from (e.g. 32 random bytes).
    #[serde(default)]
    pub key_secret: Option<PathBuf>,
    /// The host's sshd and ssh client.
    #[serde(default = "default_sshd")]
    pub sshd: PathBuf,
    #[serde(default = "default_ssh")]
    pub ssh: PathBuf,
    /// The host directory holding both programs' libraries and the dynamic loader.
    #[serde(default = "default_lib_dir")]
    pub lib_dir: PathBuf,
    /// The dynamic loader's file name in `lib_dir`.
    #[serde(default = "default_loader")]
    pub loader: String,
}

fn default_port() -> u16 {
    1204
}
fn default_sshd() -> PathBuf {
    "/usr/sbin/sshd".into()
}
fn default_ssh() -> PathBuf {
    "/usr/bin/ssh".into()
}
fn default_lib_dir() -> PathBuf {
    format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH).into()
}
fn default_loader() -> String {
    match std::env::consts::ARCH {
        "aarch64" => "ld-linux-aarch64.so.1".into(),
        _ => "ld-linux-x86-64.so.2".into(),
    }
}

impl Default for SshdConfig {
    fn default() -> Self {
        SshdConfig {
            port: default_port(),
            listen_address: String::new(),
            key_secret: None,
            sshd: default_sshd(),
            ssh: default_ssh(),
            lib_dir: default_lib_dir(),
            loader: default_loader(),
        }
    }
}

impl SshdConfig {
    /// Checks what can be checked without touching the node: `(key, problem, fix)`.
    pub fn check(&self) -> Result<(), (&'static str, String, &'static str)> {
        match &self.key_secret {
            None => {
                return Err((
                    "key_secret",
                    "is missing while enable_sshd = true".into(),
                    "name a root-only file with random bytes, the same on every node (e.g. head -c 32 /dev/urandom > /etc/shifter/sshd.secret; chmod 0600 it)",
                ))
            }
            Some(p) if !p.is_absolute() => {
                return Err((
                    "key_secret",
                    format!("{} is not absolute", p.display()),
                    "use an absolute path",
                ))
            }
            Some(_) => {}
        }
        for (key, p) in [
            ("sshd", &self.sshd),
            ("ssh", &self.ssh),
            ("lib_dir", &self.lib_dir),
        ] {
            if !p.is_absolute() {
                return Err((
                    key,
                    format!("{} is not absolute", p.display()),
                    "use an absolute path",
                ));
            }
        }
        if self.loader.is_empty() || self.loader.contains('/') {
            return Err((
                "loader",
                format!("{:?} is not a file name", self.loader),
                "name the dynamic loader's file in lib_dir, e.g. \"ld-linux-x86-64.so.2\"",
            ));
        }
        if self.port == 0 {
            return Err((
                "port",
                "0 is not a port".into(),
                "choose a free TCP port, e.g. 1204",
            ));
        }
        let a = self.listen_address.as_str();
        if !a.is_empty() && a != "hostname" && a.parse::<IpAddr>().is_err() {
            return Err((
                "listen_address",
                format!("{a:?} is neither an IP address nor \"hostname\""),
                "use \"\" (all addresses), \"hostname\" or an IP address",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Error)]
pub enum SshdError {
    #[error("sshd: {step}: {cause}")]
    Sys { step: String, cause: SysError },
    #[error("sshd: key_secret {path}: {problem}; the file must be root-owned, mode 0600 (not readable by others), and hold at least 16 bytes")]
    Secret { path: PathBuf, problem: String },
    #[error("sshd: {what} {path}: {cause}")]
    Io {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("sshd: {path} resolved to {resolved} inside the container, which is not allowed")]
    Redirected { path: PathBuf, resolved: PathBuf },
    #[error("sshd: listen_address = \"hostname\": {host} does not resolve to an IPv4 address on this node")]
    Unresolved { host: String },
    #[error("sshd: cannot derive the job keys: {0}")]
    Key(String),
    /// Something else listens there (e.g. another step of the job that won the race).
    #[error("sshd: {0} is in use")]
    PortTaken(SocketAddr),
    #[error("sshd: starting it: {0}")]
    Start(#[from] EntryError),
}

fn sys_step<T>(step: impl Into<String>, r: Result<T, SysError>) -> Result<T, SshdError> {
    r.map_err(|cause| SshdError::Sys {
        step: step.into(),
        cause,
    })
}

/// One ed25519 key pair.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    seed: [u8; 32],
    public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the seed: this ends up in logs.
        write!(f, "KeyPair({})", self.public_line(""))
    }
}

/// The keys of one job and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobKeys {
    pub client: KeyPair,
    pub host: KeyPair,
}

impl JobKeys {
    /// Seeds are HMAC-SHA256(secret, label); the labels name the purpose, job
    /// and uid, so no two jobs or users share a key and the client key never
    /// equals the host key.
    pub fn derive(secret: &[u8], job: u32, uid: u32) -> Result<JobKeys, SshdError> {
        let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let pair = |purpose: &str| -> Result<KeyPair, SshdError> {
            let label = format!("shifter-sshd-v1 {purpose} job={job} uid={uid}");
            let tag = ring::hmac::sign(&mac, label.as_bytes());
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&tag.as_ref()[..32]);
            let kp = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed)
                .map_err(|e| SshdError::Key(e.to_string()))?;
            let mut public = [0u8; 32];
            public.copy_from_slice(ring::signature::KeyPair::public_key(&kp).as_ref());
            Ok(KeyPair { seed, public })
        };
        Ok(JobKeys {
            client: pair("client")?,
            host: pair("host")?,
        })
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

impl KeyPair {
    /// The SSH wire form of the public key (RFC 8709).
    fn public_blob(&self) -> Vec<u8> {
        let mut b = Vec::new();
        put_string(&mut b, b"ssh-ed25519");
        put_string(&mut b, &self.public);
        b
    }

    /// `ssh-ed25519 AAAA… comment`, as in `authorized_keys` and `*.pub`.
    pub fn public_line(&self, comment: &str) -> String {
        format!("ssh-ed25519 {} {comment}", base64(&self.public_blob()))
            .trim_end()
            .to_owned()
    }

    /// The unencrypted `openssh-key-v1` private key file (OpenSSH's
    /// PROTOCOL.key): no cipher, no KDF, one key, padded to 8 bytes.
    pub fn private_pem(&self, comment: &str) -> String {
        let mut private = Vec::new();
        // The two equal check words let a reader detect a wrong passphrase;
        // with no cipher any value does, so take them from the public key.
        let check = &self.public[..4];
        private.extend_from_slice(check);
        private.extend_from_slice(check);
        put_string(&mut private, b"ssh-ed25519");
        put_string(&mut private, &self.public);
        let mut secret = self.seed.to_vec();
        secret.extend_from_slice(&self.public);
        put_string(&mut private, &secret);
        put_string(&mut private, comment.as_bytes());
        let mut pad = 1u8;
        while private.len() % 8 != 0 {
            private.push(pad);
            pad += 1;
        }
        let mut blob = b"openssh-key-v1\0".to_vec();
        put_string(&mut blob, b"none");
        put_string(&mut blob, b"none");
        put_string(&mut blob, b"");
        blob.extend_from_slice(&1u32.to_be_bytes());
        put_string(&mut blob, &self.public_blob());
        put_string(&mut blob, &private);
        let text = base64(&blob);
        let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
        for line in text.as_bytes().chunks(70) {
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
        pem
    }
}

/// Reads the site secret, refusing one that anyone but root could read or change.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, SshdError> {
    let bad = |problem: String| SshdError::Secret {
        path: path.to_owned(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.uid() != 0 {
        return Err(bad(format!("owned by uid {}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!("mode {:o}", meta.mode() & 0o7777)));
    }
    let secret = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if secret.len() < 16 {
        return Err(bad(format!("only {} bytes", secret.len())));
    }
    Ok(secret)
}

/// The alias every node's host key is known by, so one `known_hosts` line
/// covers all nodes of the job whatever name the user types.
fn host_alias(job: u32) -> String {
    format!("shifter-job-{job}")
}

/// `sshd_config`: key-only, this user only, no PAM, no privilege separation
/// (impossible without root, and nothing to separate from).
pub fn sshd_config(listen: SocketAddr, user: &str, job: u32) -> String {
    format!(
        "# written by shifter for job {job}\n\
         ListenAddress {listen}\n\
         HostKey {UDI}/sshd/ssh_host_ed25519_key\n\
         AuthorizedKeysFile {UDI}/sshd/authorized_keys\n\
         AuthenticationMethods publickey\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         HostbasedAuthentication no\n\
         GSSAPIAuthentication no\n\
         UsePAM no\n\
         PermitRootLogin no\n\
         AllowUsers {user}\n\
         StrictModes no\n\
         PidFile none\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         X11Forwarding no\n\
         Subsystem sftp internal-sftp\n"
    )
}

/// The client side: every host is a node of this job, reached on the job's
/// port with the job's key, and must present the job's host key.
pub fn ssh_config(port: u16, job: u32) -> String {
    format!(
        "# written by shifter: ssh between the nodes of job {job} lands in its containers\n\
         Host *\n\
         \x20   Port {port}\n\
         \x20   IdentityFile {UDI}/sshd/id_ed25519\n\
         \x20   IdentitiesOnly yes\n\
         \x20   PasswordAuthentication no\n\
         \x20   KbdInteractiveAuthentication no\n\
         \x20   BatchMode yes\n\
         \x20   HostKeyAlias {alias}\n\
         \x20   UserKnownHostsFile {UDI}/sshd/known_hosts\n\
         \x20   GlobalKnownHostsFile /dev/null\n\
         \x20   StrictHostKeyChecking yes\n\
         \x20   CheckHostIP no\n\
         \x20   UpdateHostKeys no\n\
         \x20   LogLevel ERROR\n",
        alias = host_alias(job)
    )
}

/// Where sshd listens on this node.
pub fn listen_addr(cfg: &SshdConfig, hostname: &str) -> Result<SocketAddr, SshdError> {
    let ip = match cfg.listen_address.as_str() {
        "" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "hostname" => (hostname, cfg.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.find(|a| a.is_ipv4()))
            .map(|a| a.ip())
            .ok_or_else(|| SshdError::Unresolved {
                host: hostname.to_owned(),
            })?,
        other => other.parse().map_err(|_| SshdError::Unresolved {
            host: other.to_owned(),
        })?,
    };
    Ok(SocketAddr::new(ip, cfg.port))
}

/// What [`start`] needs, decided by [`install`].
#[derive(Debug, Clone)]
pub struct Installed {
    pub listen: SocketAddr,
    /// The loader's path inside the container and sshd's full argv.
    program: PathBuf,
    argv: Vec<String>,
}

/// What the step needs to know of its sshd before the root is assembled:
/// the job's keys and the address to listen on. Made by [`plan`] as root
/// before [`crate::setup::prepare`], which writes the files and binds the
/// tools at the right moment (before any user volume exists).
#[derive(Debug, Clone)]
pub struct Plan {
    keys: JobKeys,
    pub listen: SocketAddr,
    pub job: u32,
}

/// Reads the site secret and derives the job's keys (see the module docs).
pub fn plan(cfg: &Config, user: &UserInfo, job: u32, hostname: &str) -> Result<Plan, SshdError> {
    let s = &cfg.sshd;
    let secret_path = s.key_secret.as_deref().ok_or_else(|| SshdError::Secret {
        path: PathBuf::new(),
        problem: "not configured".into(),
    })?;
    plan_from_secret(cfg, &read_secret(secret_path)?, user, job, hostname)
}

/// [`plan`] with the secret already read.
pub fn plan_from_secret(
    cfg: &Config,
    secret: &[u8],
    user: &UserInfo,
    job: u32,
    hostname: &str,
) -> Result<Plan, SshdError> {
    let keys = JobKeys::derive(secret, job, user.uid)?;
    let listen = listen_addr(&cfg.sshd, hostname)?;
    Ok(Plan { keys, listen, job })
}

/// The user's login shell if the image has it, `/bin/sh` otherwise: sshd
/// refuses a user whose shell does not exist.
fn session_shell(sys: &dyn Sys, root: &Path, user: &UserInfo) -> Option<String> {
    let exists = |p: &str| sys.resolve_on_root_mount(root, Path::new(p), None).is_ok();
    (!user.shell.is_empty() && !exists(&user.shell)).then(|| "/bin/sh".to_owned())
}

/// Root's writes into the container for sshd: `/etc/ssh/ssh_config`, a
/// `/usr/bin/ssh` wrapper when the image has no client, and `/etc/passwd`
/// again when the image lacks the user's shell. Called by `prepare` right
/// after the overlay is mounted and before any other mount exists; every
/// write stays on the overlay's own mount ([`Sys::write_in_root`]).
pub fn write_root_files(
    sys: &dyn Sys,
    cfg: &Config,
    root: &Path,
    user: &UserInfo,
    plan: &Plan,
) -> Result<(), SshdError> {
    let s = &cfg.sshd;
    let loader = format!("{UDI}/lib/{}", s.loader);
    let lib = format!("{UDI}/lib");
    sys_step(
        "writing /etc/ssh/ssh_config",
        sys.write_in_root(
            root,
            Path::new("/etc/ssh/ssh_config"),
            ssh_config(s.port, plan.job).as_bytes(),
            0o644,
        ),
    )?;
    if sys
        .resolve_on_root_mount(root, Path::new("/usr/bin/ssh"), None)
        .is_err()
    {
        let wrapper = format!(
            "#!/bin/sh\n# written by shifter: the host's ssh client, set up by /etc/ssh/ssh_config\nexec {loader} --library-path {lib} {UDI}/bin/ssh \"$@\"\n"
        );
        sys_step(
            "writing /usr/bin/ssh",
            sys.write_in_root(root, Path::new("/usr/bin/ssh"), wrapper.as_bytes(), 0o755),
        )?;
    }
    if let Some(shell) = session_shell(sys, root, user) {
        let mut u = user.clone();
        u.shell = shell;
        sys_step(
            "writing /etc/passwd",
            sys.write_in_root(
                root,
                Path::new("/etc/passwd"),
                crate::etc::passwd(&u, &cfg.extra_users).as_bytes(),
                0o644,
            ),
        )?;
    }
    Ok(())
}

/// Writes the job's keys and configs into a new directory `sshd` made in
/// `base`, the step's own tmpfs beside the root (`mount_root`: not in the
/// image, where a symlink could redirect our writes), by descriptor only;
/// owned by the user because sshd and ssh refuse keys that others can read.
/// Returns the directory (bound at [`JOB_DIR`] in the container).
pub fn write_job_dir(
    sys: &dyn Sys,
    base: &Handle,
    user: &UserInfo,
    plan: &Plan,
) -> Result<Handle, SshdError> {
    let dir = sys_step(
        "creating the sshd job directory",
        sys.open_beneath(base, Path::new("sshd"), Create::here(NodeKind::Dir)),
    )?;
    let job = plan.job;
    let keys = &plan.keys;
    let comment = format!("shifter job {job}");
    let alias = host_alias(job);
    let files: [(&str, String, u32); 8] = [
        (
            "ssh_host_ed25519_key",
            keys.host.private_pem(&comment),
            0o600,
        ),
        (
            "ssh_host_ed25519_key.pub",
            keys.host.public_line(&comment),
            0o644,
        ),
        ("id_ed25519", keys.client.private_pem(&comment), 0o600),
        ("id_ed25519.pub", keys.client.public_line(&comment), 0o644),
        (
            "authorized_keys",
            keys.client.public_line(&comment) + "\n",
            0o644,
        ),
        (
            "known_hosts",
            format!("{alias} {}\n", keys.host.public_line("")),
            0o644,
        ),
        (
            "sshd_config",
            sshd_config(plan.listen, &user.name, job),
            0o644,
        ),
        ("sshd.log", String::new(), 0o644),
    ];
    for (name, text, mode) in &files {
        sys_step(
            format!("writing {UDI}/sshd/{name}"),
            sys.write_at(
                &dir,
                name,
                text.as_bytes(),
                *mode,
                Some((user.uid, user.gid)),
            ),
        )?;
    }
    sys_step(
        "giving the sshd job directory to the user",
        sys.chown_dir(&dir, user.uid, user.gid, 0o700),
    )?;
    Ok(dir)
}

/// Where the job directory of [`write_job_dir`] is bound: writable by the
/// user (sshd's log) but `noexec`.
pub const JOB_DIR: &str = "/opt/udiImage/sshd";

/// The host tools bound read-only into the container for sshd (source,
/// destination, attributes).
pub fn tool_binds(cfg: &Config) -> Vec<(PathBuf, String, MountAttrs)> {
    let s = &cfg.sshd;
    let ro = MountAttrs::NOSUID_NODEV.with_rdonly(true);
    vec![
        (s.lib_dir.clone(), format!("{UDI}/lib"), ro),
        (s.sshd.clone(), format!("{UDI}/sbin/sshd"), ro),
        (s.ssh.clone(), format!("{UDI}/bin/ssh"), ro),
    ]
}

/// How to start the sshd that `prepare` installed for `plan`.
pub fn installed(cfg: &Config, plan: &Plan) -> Installed {
    let s = &cfg.sshd;
    let loader = format!("{UDI}/lib/{}", s.loader);
    let lib = format!("{UDI}/lib");
    let argv = [
        loader.as_str(),
        "--library-path",
        &lib,
        &format!("{UDI}/sbin/sshd"),
        "-D",
        "-r",
        "-f",
        &format!("{UDI}/sshd/sshd_config"),
        "-E",
        &format!("{UDI}/sshd/sshd.log"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Installed {
        listen: plan.listen,
        program: loader.into(),
        argv,
    }
}

/// Whether something already listens on `addr` (another step of the job, or
/// anything else): then this step starts no sshd.
pub fn port_taken(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_err()
}

/// A started sshd, a child of the calling process.
#[derive(Debug)]
pub struct Running {
    pub pid: nix::unistd::Pid,
    pub listen: SocketAddr,
    /// Field 22 of `/proc/PID/stat`, so [`Running::stop`] never signals a
    /// recycled pid (slurmstepd may reap any child).
    start_time: Option<u64>,
}

fn start_time(pid: nix::unistd::Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and ')'; fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Forks sshd as the user inside the root and waits (up to `wait`) until it
/// accepts connections, so tasks started after this can be reached.
pub fn start(
    sys: &dyn Sys,
    root: &PreparedRoot,
    user: &UserInfo,
    installed: &Installed,
    wait: Duration,
) -> Result<Running, SshdError> {
    use std::ffi::CString;
    let c = |s: &str| CString::new(s).map_err(|e| SshdError::Key(e.to_string()));
    let program = c(&installed.program.to_string_lossy())?;
    let argv: Vec<CString> = installed
        .argv
        .iter()
        .map(|a| c(a))
        .collect::<Result<_, _>>()?;
    let env = [c("PATH=/usr/local/bin:/usr/bin:/bin")?];
    let prepare = || enter(sys, root).is_ok() && drop_to_user(sys, user).is_ok();
    let pid = sys_step(
        "starting sshd",
        sys.spawn_daemon(&prepare, &program, &argv, &env),
    )?;
    let running = Running {
        pid,
        listen: installed.listen,
        start_time: start_time(pid),
    };
    let probe = match installed.listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), installed.listen.port())
        }
        _ => installed.listen,
    };
    let deadline = Instant::now() + wait;
    loop {
        if TcpStream::connect_timeout(&probe, Duration::from_millis(100)).is_ok() {
            return Ok(running);
        }
        if let Ok(nix::sys::wait::WaitStatus::Exited(_, code)) =
            nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {
            if port_taken(installed.listen) {
                return Err(SshdError::PortTaken(installed.listen));
            }
            return Err(SshdError::Io {
                what: "sshd exited with status",
                path: format!("{code} (see {UDI}/sshd/sshd.log in the container)").into(),
                cause: std::io::Error::other("did not start"),
            });
        }
        if Instant::now() > deadline {
            tracing::warn!(pid = %pid, "sshd did not accept connections on {probe} within {wait:?}; continuing");
            return Ok(running);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Running {
    /// SIGTERM, then SIGKILL after a second; reaps the child.
    pub fn stop(&self) {
        use nix::sys::signal::{kill, Signal};
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        if start_time(self.pid) != self.start_time || self.start_time.is_none() {
            return; // already gone (and perhaps reaped by slurmstepd)
        }
        let _ = kill(self.pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(WaitStatus::StillAlive) => {
                    let _ = kill(self.pid, Signal::SIGKILL);
                    let _ = waitpid(self.pid, None);
                    return;
                }
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sshd_is_started_through_sys_inside_the_container_as_the_user() {
        use crate::sys::fake::{Call, FakeSys};
        let sys = FakeSys::new();
        let root = PreparedRoot {
            root: "/run/shifter/root".into(),
            loop_device: "/dev/loop0".into(),
            mounts: vec![],
        };
        let user = UserInfo::from_ids("alice", 1001, 1001, &[], "/home/alice");
        // A port nothing listens on: the wait gives up at once.
        let listen: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let installed = Installed {
            listen,
            program: "/opt/udiImage/lib/ld.so".into(),
            argv: vec!["sshd".into(), "-D".into()],
        };
        start(&sys, &root, &user, &installed, Duration::ZERO).unwrap();
        let calls = sys.calls();
        assert_eq!(
            calls[0],
            Call::SpawnDaemon(vec![
                "/opt/udiImage/lib/ld.so".into(),
                "sshd".into(),
                "-D".into()
            ])
        );
        // The child's side: into the root, then the user's ids, nothing else.
        assert_eq!(calls[1], Call::Chroot("/run/shifter/root".into()));
        assert_eq!(calls.last(), Some(&Call::Setresuid(1001)));
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn keys_depend_on_job_uid_and_secret_and_are_stable() {
        let s = b"0123456789abcdef0123456789abcdef";
        let a = JobKeys::derive(s, 7, 1001).unwrap();
        assert_eq!(a, JobKeys::derive(s, 7, 1001).unwrap());
        assert_ne!(a.client, JobKeys::derive(s, 8, 1001).unwrap().client);
        assert_ne!(a.client, JobKeys::derive(s, 7, 1002).unwrap().client);
        assert_ne!(
            a.client,
            JobKeys::derive(b"another secret, other site", 7, 1001)
                .unwrap()
                .client
        );
        assert_ne!(a.client, a.host);
        assert!(!format!("{a:?}").contains(&base64(&a.client.seed)));
    }

    #[test]
    fn config_needs_a_secret_and_sane_values() {
        let mut c = SshdConfig::default();
        assert_eq!(c.check().unwrap_err().0, "key_secret");
        c.key_secret = Some("/etc/shifter/sshd.secret".into());
        c.check().unwrap();
        c.listen_address = "nodename".into();
        assert_eq!(c.check().unwrap_err().0, "listen_address");
        c.listen_address = "hostname".into();
        c.loader = "/lib64/ld.so".into();
        assert_eq!(c.check().unwrap_err().0, "loader");
    }

    #[test]
    fn site_config_enables_sshd_only_with_a_secret() {
        let base = "system = \"c\"\nimage_dir = \"/i\"\nenable_sshd = true\n";
        let err = Config::parse(base, Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("sshd.key_secret"), "{err}");
        let cfg = Config::parse(
            &format!("{base}[sshd]\nkey_secret = \"/etc/shifter/sshd.secret\"\nport = 2222\nlisten_address = \"hostname\"\n"),
            Path::new("t.toml"),
        )
        .unwrap();
        assert!(cfg.enable_sshd);
        assert_eq!(cfg.sshd.port, 2222);
        assert_eq!(cfg.sshd.sshd, Path::new("/usr/sbin/sshd"));
        let typo = Config::parse(
            &format!("{base}[sshd]\nkey_secert = \"/x\"\n"),
            Path::new("t.toml"),
        );
        assert!(typo.is_err(), "unknown keys are errors");
        // Off by default, and then [sshd] is not checked.
        let off =
            Config::parse("system = \"c\"\nimage_dir = \"/i\"\n", Path::new("t.toml")).unwrap();
        assert!(!off.enable_sshd);
    }

    #[test]
    fn sshd_config_allows_only_keys_for_the_user() {
        let text = sshd_config("127.0.1.2:1204".parse().unwrap(), "alice", 9);
        for line in [
            "ListenAddress 127.0.1.2:1204",
            "AuthenticationMethods publickey",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "AllowUsers alice",
            "AuthorizedKeysFile /opt/udiImage/sshd/authorized_keys",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let client = ssh_config(1204, 9);
        assert!(client.contains("HostKeyAlias shifter-job-9"));
        assert!(client.contains("StrictHostKeyChecking yes"));
    }

    #[test]
    fn listen_address_forms() {
        let mut c = SshdConfig {
            port: 2222,
            ..SshdConfig::default()
        };
        assert_eq!(
            listen_addr(&c, "x").unwrap(),
            "0.0.0.0:2222".parse().unwrap()
        );
        c.listen_address = "127.0.1.3".into();
        assert_eq!(
            listen_addr(&c, "x").unwrap(),
            "127.0.1.3:2222".parse().unwrap()
        );
        c.listen_address = "hostname".into();
        assert_eq!(
            listen_addr(&c, "localhost").unwrap().ip(),
            IpAddr::from([127, 0, 0, 1])
        );
    }

    /// The files must be what OpenSSH itself accepts: `ssh-keygen -y` reads
    /// the private key back and prints the same public key.
    #[test]
    fn openssh_reads_the_derived_private_key() {
        if std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_err()
        {
            eprintln!("SKIP: ssh-keygen is not installed (apt-get install openssh-client)");
            return;
        }
        let k = JobKeys::derive(b"0123456789abcdef0123456789abcdef", 3, 1000).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id");
        std::fs::write(&p, k.client.private_pem("c")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            got.split_whitespace().nth(1),
            k.client.public_line("").split_whitespace().nth(1)
        );
    }
}
