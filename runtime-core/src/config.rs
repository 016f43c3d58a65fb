//! The site configuration, `/etc/shifter/shifter.toml`, shared by the runtime,
//! the `shifter` command, the Slurm plugin and `shifterimg`.
//!
//! Load it with [`Config::load`], which refuses a file that is not root-owned or
//! is writable by group or others (a user who can edit it controls what root
//! mounts). Unknown keys are errors everywhere, so a typo never silently turns a
//! setting off. Every error names the file, the key and what to change.
//!
//! ```toml
//! system = "cluster1"
//! image_dir = "/var/lib/shifter/images"
//! gateways = ["http://imagegw:7777"]
//! upper_size = "256m"
//! default_modules = ["gpu"]
//!
//! [[site_fs]]
//! source = "/home"
//! destination = "/home"
//!
//! [site_env]
//! SITE = "cluster1"
//!
//! [modules.gpu]
//! devices = ["/dev/nvidia0"]
//! env = { CUDA_VISIBLE_DEVICES = "0" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::trust::{self, Owners, TrustError};

/// Where the site config lives unless a (root) caller says otherwise. Sites
/// that install elsewhere set `SHIFTER_CONFIG_PATH` when building; a setuid
/// `shifter` trusts only this path.
pub const DEFAULT_CONFIG_PATH: &str = match option_env!("SHIFTER_CONFIG_PATH") {
    Some(p) => p,
    None => "/etc/shifter/shifter.toml",
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config {path} is not trusted: {cause}")]
    Untrusted { path: PathBuf, cause: TrustError },
    #[error("config {path}: {message}fix the key named above (unknown keys are errors; see docs/runtime.md)")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: key `{key}`: {problem}; {fix}")]
    Invalid {
        path: PathBuf,
        key: String,
        problem: String,
        fix: String,
    },
    /// Found on use, not at load: the file may be installed before the account.
    #[error("shifter.toml key `gateway_user`: {problem}; create the account (the package's postinst does) or set gateway_uid")]
    GatewayUser { problem: String },
}

/// A bind mount the site (or a module) adds to every container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteMount {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the container; defaults to `source`.
    #[serde(default)]
    pub destination: Option<PathBuf>,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Bind submounts too (`MS_REC`); they get nosuid/nodev(/ro) as well.
    #[serde(default)]
    pub recursive: bool,
}

impl SiteMount {
    pub fn destination(&self) -> &Path {
        self.destination.as_deref().unwrap_or(&self.source)
    }
}

/// A named set of mounts, devices and environment edits, enabled by
/// `--module=` or by `default_modules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Module {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub mounts: Vec<SiteMount>,
    /// Host device nodes bound at the same path inside the container's `/dev`.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub env_append: BTreeMap<String, String>,
    #[serde(default)]
    pub env_prepend: BTreeMap<String, String>,
    #[serde(default)]
    pub env_unset: Vec<String>,
    /// Container directories holding the module's shared libraries. They are
    /// put first in `LD_LIBRARY_PATH` (in the order given) and listed in
    /// `/etc/ld.so.conf.d/shifter-<module>.conf`; nothing runs `ldconfig`,
    /// because nothing may run as root inside the container.
    #[serde(default)]
    pub ldconfig_dirs: Vec<PathBuf>,
    /// Modules that cannot be enabled together with this one.
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Job variables naming the devices the step was given (e.g.
    /// `["SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES"]`); the first one set
    /// selects among the numbered `devices`, see [`Module::select_devices`].
    #[serde(default)]
    pub select_devices_by: Vec<String>,
}

impl Module {
    /// This module with only the devices the job was given. Nodes whose name
    /// ends in a number (`/dev/nvidia1`) are kept only when that number is in
    /// the first variable of `select_devices_by` the job has (a comma-separated
    /// list such as Slurm's `0,2`); nodes without a number (`/dev/nvidiactl`)
    /// are always kept. When none of the variables is set, or its value is not
    /// a list of numbers (GPU UUIDs), every device is kept: the step's device
    /// cgroup still decides what can be opened.
    ///
    /// Patterns (`/dev/nvidia*`) are first expanded to the nodes the host has.
    pub fn select_devices(&self, job_env: impl Fn(&str) -> Option<String>) -> Module {
        let mut expanded = self.clone();
        expanded.devices = expand_device_patterns(&self.devices);
        expanded.select_expanded(job_env)
    }

    fn select_expanded(self, job_env: impl Fn(&str) -> Option<String>) -> Module {
        let Some(value) = self.select_devices_by.iter().find_map(|k| job_env(k)) else {
            return self;
        };
        let wanted: Option<Vec<u32>> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().ok())
            .collect();
        let Some(wanted) = wanted else {
            tracing::warn!(%value, "device selection is not a list of numbers; binding every device of the module");
            return self;
        };
        let mut m = self;
        m.devices.retain(|d| match device_number(d) {
            Some(n) => wanted.contains(&n),
            None => true,
        });
        m
    }
}

/// `devices` with every pattern (a name ending in `*`, e.g. `/dev/nvidia*`)
/// replaced by the matching nodes of the host, sorted; a pattern matching
/// nothing adds nothing. Plain paths are kept as they are.
pub fn expand_device_patterns(devices: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in devices {
        let (Some(dir), Some(prefix)) = (
            d.parent(),
            d.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix('*')),
        ) else {
            out.push(d.clone());
            continue;
        };
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(prefix))
                    && e.file_type().is_ok_and(|t| {
                        use std::os::unix::fs::FileTypeExt;
                        t.is_char_device() || t.is_block_device()
                    })
            })
            .map(|e| e.path())
            .collect();
        found.sort();
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// The number a device node's name ends with (`nvidia12` -> 12).
fn device_number(dev: &Path) -> Option<u32> {
    let name = dev.file_name()?.to_str()?;
    // Only a trailing number counts: "nvidia-caps1x" is not device 1.
    name.rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .filter(|d| !d.is_empty())?
        .parse()
        .ok()
}

/// An account added to the container's generated `/etc/passwd` (and its group
/// to `/etc/group`) besides the user, e.g. a service account MPI needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default = "default_home")]
    pub home: String,
    #[serde(default = "default_shell")]
    pub shell: String,
}

/// `[per_node_cache]`: lets users ask for a private, size-capped xfs
/// filesystem per node (`--volume=DIR:/cache:perNodeCache=size=2G`). Without
/// this section such requests are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerNodeCacheConfig {
    /// The backing directory used when the site has one (Shifter's
    /// `perNodeCachePath`); users name it as the volume's source.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Further backing directories users may name as the source.
    #[serde(default)]
    pub allowed_dirs: Vec<PathBuf>,
    /// Largest `size=` a user may ask for (e.g. `"50G"`).
    pub max_size: String,
    /// The `mkfs.xfs` to run (absolute path).
    #[serde(default = "default_mkfs_xfs")]
    pub mkfs_xfs: PathBuf,
    /// How long `mkfs.xfs` may take before the setup fails.
    #[serde(default = "default_mkfs_timeout")]
    pub mkfs_timeout_secs: u64,
    /// Most caches one step (or one `shifter` run) may ask for.
    #[serde(default = "default_max_count")]
    pub max_count: usize,
    /// Most bytes of caches one user may have attached on a node at once,
    /// over all their steps and `shifter` runs (default: 4 × `max_size`).
    #[serde(default)]
    pub max_per_user: Option<String>,
}

impl PerNodeCacheConfig {
    /// Caches backed in `dir` up to `max_size`, with the default mkfs settings.
    pub fn new(dir: PathBuf, max_size: String) -> Self {
        PerNodeCacheConfig {
            dir: Some(dir),
            allowed_dirs: Vec::new(),
            max_size,
            mkfs_xfs: default_mkfs_xfs(),
            mkfs_timeout_secs: default_mkfs_timeout(),
            max_count: default_max_count(),
            max_per_user: None,
        }
    }

    /// `dir` and `allowed_dirs`, the directories a cache may be backed in.
    pub fn backing_dirs(&self) -> impl Iterator<Item = &Path> {
        self.dir
            .iter()
            .chain(self.allowed_dirs.iter())
            .map(PathBuf::as_path)
    }
}

fn default_mkfs_xfs() -> PathBuf {
    "/usr/sbin/mkfs.xfs".into()
}
fn default_max_count() -> usize {
    4
}

fn default_mkfs_timeout() -> u64 {
    120
}

/// What the container's `/tmp` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TmpMode {
    /// A private tmpfs of `tmp_size`, gone with the step.
    #[default]
    Private,
    /// The host's `/tmp`, bound nosuid,nodev.
    Host,
}

/// The whole site configuration. Every field is documented in `docs/runtime.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Platform name used in gateway paths (`/api/lookup/{system}/…`).
    pub system: String,
    /// Where `<id>.squashfs` and `<id>.json` live.
    pub image_dir: PathBuf,
    /// Gateway base URLs, tried in order.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Image type of a reference without `type:` prefix (`docker` or `custom`).
    #[serde(default = "default_image_type")]
    pub default_image_type: String,
    /// Directory under which container roots are assembled (inside a private
    /// mount namespace, so it is never visible on the host).
    #[serde(default = "default_mount_root")]
    pub mount_root: PathBuf,
    /// tmpfs `size=` of the writable overlay layer (e.g. `256m`, `1g`, `10%`).
    #[serde(default = "default_upper_size")]
    pub upper_size: String,
    #[serde(default)]
    pub tmp: TmpMode,
    /// tmpfs `size=` of a private `/tmp`.
    #[serde(default = "default_tmp_size")]
    pub tmp_size: String,
    #[serde(default)]
    pub site_fs: Vec<SiteMount>,
    /// Variables set in every container (after the image's `ENV`).
    #[serde(default)]
    pub site_env: BTreeMap<String, String>,
    /// `KEY = "value"`: appended to `$KEY` with `:`.
    #[serde(default)]
    pub env_append: BTreeMap<String, String>,
    /// `KEY = "value"`: prepended to `$KEY` with `:`.
    #[serde(default)]
    pub env_prepend: BTreeMap<String, String>,
    #[serde(default)]
    pub env_unset: Vec<String>,
    #[serde(default)]
    pub modules: BTreeMap<String, Module>,
    /// Modules enabled when the user gives no `--module` (`--module=none` disables).
    #[serde(default)]
    pub default_modules: Vec<String>,
    /// Volume destinations refused on top of the built-in list.
    #[serde(default)]
    pub forbidden_destinations: Vec<PathBuf>,
    #[serde(default)]
    pub extra_users: Vec<ExtraUser>,
    /// The gateway's account: besides root, the only owner accepted for image
    /// files and directories. Read it through [`Config::gateway_account`].
    #[serde(default)]
    pub gateway_uid: Option<u32>,
    /// The same account by name, resolved when used, so a packaged config can
    /// name the account the package creates without knowing its uid.
    #[serde(default)]
    pub gateway_user: Option<String>,
    #[serde(default = "default_munge_socket")]
    pub munge_socket: PathBuf,
    /// Timeout of one gateway lookup, per gateway.
    #[serde(default = "default_lookup_timeout")]
    pub lookup_timeout_secs: u64,
    /// Start a per-job sshd in every container (see [`crate::sshd`] and `[sshd]`).
    #[serde(default)]
    pub enable_sshd: bool,
    #[serde(default)]
    pub sshd: crate::sshd::SshdConfig,
    #[serde(default)]
    pub per_node_cache: Option<PerNodeCacheConfig>,
}

fn default_image_type() -> String {
    "docker".into()
}
fn default_mount_root() -> PathBuf {
    "/var/lib/shifter/mnt".into()
}
fn default_upper_size() -> String {
    "256m".into()
}
fn default_tmp_size() -> String {
    "1g".into()
}
fn default_munge_socket() -> PathBuf {
    "/run/munge/munge.socket.2".into()
}
fn default_lookup_timeout() -> u64 {
    10
}
fn default_home() -> String {
    "/".into()
}
fn default_shell() -> String {
    "/bin/sh".into()
}

/// Parses a `--module`/`SHIFTER_MODULE` value, the same for the plugin and
/// `shifter`: comma-separated names (blanks around commas ignored), or `none`
/// alone for no modules at all (an empty list). Whether the names exist is
/// [`Config::resolve_modules`]' business.
pub fn parse_module_list(value: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if names.is_empty() {
        return Err("no module named: give a comma-separated list, or none".into());
    }
    if names.iter().any(|n| n == "none") {
        if names.len() > 1 {
            return Err("`none` cannot be combined with other modules".into());
        }
        return Ok(Vec::new());
    }
    Ok(names)
}

impl Config {
    /// Reads and validates the config, refusing it unless the file and its
    /// directories are root-owned and not writable by group or others.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if let Err(source) = std::fs::metadata(path) {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                cause: source,
            });
        }
        let parent = path.parent().unwrap_or(Path::new("/"));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        trust::check_file_and_parents(path, parent, &Owners::root_only()).map_err(|source| {
            ConfigError::Untrusted {
                path: path.to_owned(),
                cause: source,
            }
        })?;
        Self::load_untrusted(path)
    }

    /// Reads and validates the config without the ownership check. Only for
    /// tests and for tools that never act with privilege.
    pub fn load_untrusted(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            cause: source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `origin` only names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// The gateway's uid, from `gateway_uid` or by looking up `gateway_user`.
    pub fn gateway_account(&self) -> Result<Option<u32>, ConfigError> {
        let Some(name) = &self.gateway_user else {
            return Ok(self.gateway_uid);
        };
        let problem = match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => return Ok(Some(u.uid.as_raw())),
            Ok(None) => format!("no account named {name:?} on this node"),
            Err(e) => format!("cannot look up account {name:?}: {e}"),
        };
        Err(ConfigError::GatewayUser { problem })
    }

    /// The modules to apply: `requested` (`None` = defaults, `["none"]` = none).
    pub fn resolve_modules(
        &self,
        requested: Option<&[String]>,
    ) -> Result<Vec<(&str, &Module)>, String> {
        let names: Vec<&str> = match requested {
            None => self.default_modules.iter().map(String::as_str).collect(),
            Some([only]) if only == "none" => Vec::new(),
            Some(list) => list
                .iter()
                .map(String::as_str)
                .filter(|n| !n.is_empty())
                .collect(),
        };
        let mut chosen: Vec<(&str, &Module)> = Vec::new();
        for n in names {
            let (k, m) = self.modules.get_key_value(n).ok_or_else(|| {
                format!(
                    "unknown module {n:?}: available modules are {:?} (or `none`)",
                    self.modules.keys().collect::<Vec<_>>()
                )
            })?;
            // Asking twice for one module is harmless; applying it twice is not.
            if chosen.iter().any(|(c, _)| *c == k.as_str()) {
                continue;
            }
            chosen.push((k.as_str(), m));
        }
        check_module_conflicts(&chosen)?;
        Ok(chosen)
    }

    fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String, fix: &str| ConfigError::Invalid {
            path: origin.to_owned(),
            key: key.to_owned(),
            problem,
            fix: fix.to_owned(),
        };
        if self.gateway_uid.is_some() && self.gateway_user.is_some() {
            return Err(bad(
                "gateway_user",
                "both gateway_uid and gateway_user are set".into(),
                "keep one of them",
            ));
        }
        if self.system.is_empty()
            || !self
                .system
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(bad(
                "system",
                format!("{:?} is not a platform name", self.system),
                "use letters, digits, '.', '_' and '-', e.g. system = \"cluster1\"",
            ));
        }
        for (key, p) in [
            ("image_dir", &self.image_dir),
            ("mount_root", &self.mount_root),
            ("munge_socket", &self.munge_socket),
        ] {
            if !p.is_absolute() {
                return Err(bad(
                    key,
                    format!("{} is not absolute", p.display()),
                    "give an absolute path",
                ));
            }
        }
        for (i, g) in self.gateways.iter().enumerate() {
            if !(g.starts_with("http://") || g.starts_with("https://")) {
                return Err(bad(
                    &format!("gateways[{i}]"),
                    format!("{g:?} is not an http(s) URL"),
                    "write it as \"http://host:port\"",
                ));
            }
        }
        if !matches!(self.default_image_type.as_str(), "docker" | "custom") {
            return Err(bad(
                "default_image_type",
                format!("{:?} is not an image type", self.default_image_type),
                "use \"docker\" or \"custom\"",
            ));
        }
        for (key, size) in [
            ("upper_size", &self.upper_size),
            ("tmp_size", &self.tmp_size),
        ] {
            if !valid_tmpfs_size(size) {
                return Err(bad(
                    key,
                    format!("{size:?} is not a tmpfs size"),
                    "use a number with optional k/m/g suffix or a percentage, e.g. \"256m\"",
                ));
            }
        }
        if self.lookup_timeout_secs == 0 {
            return Err(bad(
                "lookup_timeout_secs",
                "0 would never wait".into(),
                "use a positive number of seconds",
            ));
        }
        if let Some(c) = &self.per_node_cache {
            crate::per_node_cache::check_config(c).map_err(|(key, problem, fix)| {
                bad(&format!("per_node_cache.{key}"), problem, fix)
            })?;
        }
        if self.enable_sshd {
            self.sshd
                .check()
                .map_err(|(key, problem, fix)| bad(&format!("sshd.{key}"), problem, fix))?;
        }
        check_mounts(&self.site_fs, "site_fs", &bad)?;
        check_env(
            &self.site_env,
            &self.env_append,
            &self.env_prepend,
            &self.env_unset,
            "",
            &bad,
        )?;
        for (name, m) in &self.modules {
            if name.is_empty() || name == "none" || name.contains(',') {
                return Err(bad(
                    &format!("modules.{name}"),
                    "reserved or invalid module name".into(),
                    "rename the module (not empty, not `none`, no commas)",
                ));
            }
            check_mounts(&m.mounts, &format!("modules.{name}.mounts"), &bad)?;
            for (i, d) in m.devices.iter().enumerate() {
                let s = d.to_string_lossy();
                let star_ok = !s.trim_end_matches('*').contains('*')
                    && !d
                        .parent()
                        .is_some_and(|p| p.to_string_lossy().contains('*'));
                if !d.starts_with("/dev/") || !star_ok {
                    return Err(bad(
                        &format!("modules.{name}.devices[{i}]"),
                        format!("{} is not under /dev (or has a '*' before the end)", d.display()),
                        "list device nodes such as \"/dev/nvidia0\" or patterns such as \"/dev/nvidia*\"",
                    ));
                }
            }
            check_env(
                &m.env,
                &m.env_append,
                &m.env_prepend,
                &m.env_unset,
                &format!("modules.{name}."),
                &bad,
            )?;
            let file_safe = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !m.ldconfig_dirs.is_empty() && !file_safe {
                return Err(bad(
                    &format!("modules.{name}"),
                    "a module with ldconfig_dirs names /etc/ld.so.conf.d/shifter-<module>.conf"
                        .into(),
                    "use letters, digits, '.', '_' and '-' in its name",
                ));
            }
            for (i, d) in m.ldconfig_dirs.iter().enumerate() {
                let s = d.to_string_lossy();
                if !d.is_absolute() || s.contains([':', '\n']) {
                    return Err(bad(
                        &format!("modules.{name}.ldconfig_dirs[{i}]"),
                        format!("{s:?} is not an absolute path without ':' or newline"),
                        "give absolute container directories, e.g. \"/opt/nvidia/lib\"",
                    ));
                }
            }
            for (i, k) in m.select_devices_by.iter().enumerate() {
                if k.is_empty() || k.contains(['=', '\0']) {
                    return Err(bad(
                        &format!("modules.{name}.select_devices_by[{i}]"),
                        format!("{k:?} is not a variable name"),
                        "name job variables such as \"CUDA_VISIBLE_DEVICES\"",
                    ));
                }
            }
            for (i, c) in m.conflicts.iter().enumerate() {
                if !self.modules.contains_key(c) || c == name {
                    return Err(bad(
                        &format!("modules.{name}.conflicts[{i}]"),
                        format!("{c:?} is not another defined module"),
                        "name modules defined under [modules.NAME]",
                    ));
                }
            }
        }
        for (i, d) in self.default_modules.iter().enumerate() {
            if !self.modules.contains_key(d) {
                return Err(bad(
                    &format!("default_modules[{i}]"),
                    format!("module {d:?} is not defined"),
                    "define it under [modules.NAME] or remove it",
                ));
            }
        }
        if let Err(why) = self.resolve_modules(None) {
            return Err(bad(
                "default_modules",
                why,
                "remove one of the conflicting modules from default_modules",
            ));
        }
        for (i, d) in self.forbidden_destinations.iter().enumerate() {
            if !d.is_absolute() {
                return Err(bad(
                    &format!("forbidden_destinations[{i}]"),
                    format!("{} is not absolute", d.display()),
                    "give an absolute container path",
                ));
            }
        }
        for (i, u) in self.extra_users.iter().enumerate() {
            let ok = |s: &str| !s.is_empty() && !s.contains([':', '\n']);
            if !ok(&u.name)
                || !ok(&u.home)
                || !ok(&u.shell)
                || u.group.as_deref().is_some_and(|g| !ok(g))
            {
                return Err(bad(
                    &format!("extra_users[{i}]"),
                    "a name, group, home or shell is empty or contains ':' or a newline".into(),
                    "fix the entry so it fits in /etc/passwd",
                ));
            }
        }
        Ok(())
    }
}

/// Two modules conflict when either lists the other in `conflicts`, or when
/// both mount (or bind a device) at the same container path: the second
/// mount would silently hide the first.
fn check_module_conflicts(chosen: &[(&str, &Module)]) -> Result<(), String> {
    for (i, (a, ma)) in chosen.iter().enumerate() {
        for (b, mb) in &chosen[i + 1..] {
            if ma.conflicts.iter().any(|c| c == b) || mb.conflicts.iter().any(|c| c == a) {
                return Err(format!(
                    "modules {a:?} and {b:?} conflict and cannot be enabled together; choose one of them"
                ));
            }
            let dests_b: Vec<&Path> = module_destinations(mb).collect();
            if let Some(d) = module_destinations(ma).find(|d| dests_b.contains(d)) {
                return Err(format!(
                    "modules {a:?} and {b:?} both mount {}; they cannot be enabled together, choose one of them",
                    d.display()
                ));
            }
        }
    }
    Ok(())
}

fn module_destinations(m: &Module) -> impl Iterator<Item = &Path> {
    m.mounts
        .iter()
        .map(SiteMount::destination)
        .chain(m.devices.iter().map(PathBuf::as_path))
}

fn valid_tmpfs_size(s: &str) -> bool {
    let digits = s
        .strip_suffix(['k', 'm', 'g', 'K', 'M', 'G', '%'])
        .unwrap_or(s);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.bytes().any(|b| b != b'0')
}

fn check_mounts(
    mounts: &[SiteMount],
    key: &str,
    bad: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    for (i, m) in mounts.iter().enumerate() {
        if !m.source.is_absolute() || !m.destination().is_absolute() {
            return Err(bad(
                &format!("{key}[{i}]"),
                format!(
                    "{} -> {} is not absolute",
                    m.source.display(),
                    m.destination().display()
                ),
                "give absolute source and destination paths",
            ));
        }
    }
    Ok(())
}

fn check_env(
    set: &BTreeMap<String, String>,
    append: &BTreeMap<String, String>,
    prepend: &BTreeMap<String, String>,
    unset: &[String],
    prefix: &str,
    bad: &dyn Fn(&str, String, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    let names = set
        .keys()
        .map(|k| ("env", k))
        .chain(append.keys().map(|k| ("env_append", k)))
        .chain(prepend.keys().map(|k| ("env_prepend", k)))
        .chain(unset.iter().map(|k| ("env_unset", k)));
    for (table, k) in names {
        if k.is_empty() || k.contains(['=', '\0']) {
            let table = if prefix.is_empty() && table == "env" {
                "site_env"
            } else {
                table
            };
            return Err(bad(
                &format!("{prefix}{table}"),
                format!("{k:?} is not a variable name"),
                "use a name without '='",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "system = \"c1\"\nimage_dir = \"/images\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/shifter/shifter.toml"))
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.system, "c1");
        assert_eq!(c.image_dir, Path::new("/images"));
        assert_eq!(c.default_image_type, "docker");
        assert_eq!(c.mount_root, Path::new("/var/lib/shifter/mnt"));
        assert_eq!(c.upper_size, "256m");
        assert_eq!(c.tmp, TmpMode::Private);
        assert_eq!(c.lookup_timeout_secs, 10);
        assert_eq!(c.munge_socket, Path::new("/run/munge/munge.socket.2"));
        assert!(c.gateways.is_empty() && c.modules.is_empty() && c.gateway_uid.is_none());
    }

    #[test]
    fn module_lists_parse_alike_for_every_front_end() {
        assert_eq!(parse_module_list(" gpu, mpich ").unwrap(), ["gpu", "mpich"]);
        assert!(parse_module_list("none").unwrap().is_empty());
        assert!(parse_module_list(",")
            .unwrap_err()
            .contains("no module named"));
        assert!(parse_module_list("").is_err());
        assert!(parse_module_list("none,gpu")
            .unwrap_err()
            .contains("`none`"));
    }

    #[test]
    fn gateway_user_is_looked_up_when_used() {
        let cfg = |extra: &str| {
            Config::parse(
                &format!("system = \"c\"\nimage_dir = \"/i\"\n{extra}"),
                Path::new("t.toml"),
            )
        };
        let root = cfg("gateway_user = \"root\"").unwrap();
        assert_eq!(root.gateway_account().unwrap(), Some(0));
        let by_uid = cfg("gateway_uid = 998").unwrap();
        assert_eq!(by_uid.gateway_account().unwrap(), Some(998));
        // An account that does not exist yet parses (the config may be installed
        // before the account), but using it fails and names the key.
        let missing = cfg("gateway_user = \"no-such-account-here\"").unwrap();
        let e = missing.gateway_account().unwrap_err().to_string();
        assert!(
            e.contains("gateway_user") && e.contains("no-such-account-here"),
            "{e}"
        );
        let both = cfg("gateway_uid = 1\ngateway_user = \"root\"").unwrap_err();
        assert!(both.to_string().contains("keep one of them"), "{both}");
    }

    #[test]
    fn full_config_parses_every_key() {
        let text = r#"
system = "cluster1"
image_dir = "/var/lib/shifter/images"
gateways = ["http://gw1:7777", "https://gw2"]
default_image_type = "custom"
mount_root = "/run/shifter"
upper_size = "10%"
tmp = "host"
tmp_size = "2g"
site_env = { SITE = "c1" }
env_append = { PATH = "/opt/site/bin" }
env_prepend = { LD_LIBRARY_PATH = "/opt/site/lib" }
env_unset = ["LS_COLORS"]
default_modules = ["gpu"]
forbidden_destinations = ["/opt/secret"]
gateway_uid = 998
munge_socket = "/run/munge/m.sock"
lookup_timeout_secs = 3

[[site_fs]]
source = "/home"

[[site_fs]]
source = "/scratch/data"
destination = "/data"
read_only = true
recursive = true

[modules.gpu]
description = "NVIDIA devices"
devices = ["/dev/nvidia0"]
mounts = [{ source = "/usr/lib/nvidia", destination = "/opt/nvidia", read_only = true }]
env = { CUDA_VISIBLE_DEVICES = "0" }
env_prepend = { LD_LIBRARY_PATH = "/opt/nvidia" }

[[extra_users]]
name = "munge"
uid = 101
gid = 101
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.gateways.len(), 2);
        assert_eq!(c.tmp, TmpMode::Host);
        assert_eq!(c.site_fs[0].destination(), Path::new("/home"));
        assert_eq!(c.site_fs[1].destination(), Path::new("/data"));
        assert!(c.site_fs[1].read_only && c.site_fs[1].recursive);
        let gpu = &c.modules["gpu"];
        assert_eq!(gpu.devices, vec![PathBuf::from("/dev/nvidia0")]);
        assert!(gpu.mounts[0].read_only);
        assert_eq!(c.extra_users[0].shell, "/bin/sh");
        assert_eq!(c.gateway_uid, Some(998));
        let mods = c.resolve_modules(None).unwrap();
        assert_eq!(mods.len(), 1);
        assert_eq!(mods[0].0, "gpu");
        assert!(c
            .resolve_modules(Some(&["none".into()]))
            .unwrap()
            .is_empty());
        let err = c.resolve_modules(Some(&["nope".into()])).unwrap_err();
        assert!(
            err.contains("unknown module \"nope\"") && err.contains("gpu"),
            "{err}"
        );
    }

    const TWO_MODULES: &str = "[modules.gpu]\ndevices = [\"/dev/nvidia0\"]\n\
        mounts = [{ source = \"/usr/lib/nv\", destination = \"/opt/lib\" }]\n\
        [modules.mpich]\nconflicts = [\"openmpi\"]\n\
        mounts = [{ source = \"/usr/lib/mpich\", destination = \"/opt/mpi\" }]\n\
        [modules.openmpi]\nmounts = [{ source = \"/usr/lib/ompi\", destination = \"/opt/mpi2\" }]\n\
        [modules.other_nv]\nmounts = [{ source = \"/srv/nv\", destination = \"/opt/lib\" }]\n";

    #[test]
    fn declared_conflict_is_refused_naming_both_modules_in_either_order() {
        let c = parse(&format!("{MINIMAL}{TWO_MODULES}")).unwrap();
        for pair in [["mpich", "openmpi"], ["openmpi", "mpich"]] {
            let req: Vec<String> = pair.iter().map(|s| s.to_string()).collect();
            let err = c.resolve_modules(Some(&req)).unwrap_err();
            assert!(
                err.contains("\"mpich\"")
                    && err.contains("\"openmpi\"")
                    && err.contains("conflict"),
                "{err}"
            );
        }
        assert_eq!(
            c.resolve_modules(Some(&["gpu".into(), "mpich".into()]))
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn two_modules_mounting_one_destination_conflict_naming_both_and_the_path() {
        let c = parse(&format!("{MINIMAL}{TWO_MODULES}")).unwrap();
        let err = c
            .resolve_modules(Some(&["gpu".into(), "other_nv".into()]))
            .unwrap_err();
        assert!(
            err.contains("\"gpu\"") && err.contains("\"other_nv\"") && err.contains("/opt/lib"),
            "{err}"
        );
    }

    #[test]
    fn devices_are_selected_by_the_first_variable_the_job_has() {
        let c = parse(&format!(
            "{MINIMAL}[modules.g]\nselect_devices_by = [\"SLURM_STEP_GPUS\", \"CUDA_VISIBLE_DEVICES\"]\n\
             devices = [\"/dev/nvidiactl\", \"/dev/nvidia0\", \"/dev/nvidia1\", \"/dev/nvidia2\", \"/dev/nvidia-uvm\"]\n"
        ))
        .unwrap();
        let g = &c.modules["g"];
        let names = |m: Module| -> Vec<String> {
            m.devices.iter().map(|d| d.display().to_string()).collect()
        };
        let cuda_1 = |k: &str| (k == "CUDA_VISIBLE_DEVICES").then(|| "1".to_string());
        assert_eq!(
            names(g.select_devices(cuda_1)),
            ["/dev/nvidiactl", "/dev/nvidia1", "/dev/nvidia-uvm"]
        );
        let both = |k: &str| match k {
            "SLURM_STEP_GPUS" => Some("0,2".to_string()),
            _ => Some("1".to_string()),
        };
        assert_eq!(
            names(g.select_devices(both)),
            [
                "/dev/nvidiactl",
                "/dev/nvidia0",
                "/dev/nvidia2",
                "/dev/nvidia-uvm"
            ]
        );
        assert_eq!(g.select_devices(|_| None).devices.len(), 5);
        let uuid = |_: &str| Some("GPU-8a1b".to_string());
        assert_eq!(g.select_devices(uuid).devices.len(), 5);
        let empty = |_: &str| Some(String::new());
        assert_eq!(
            names(g.select_devices(empty)),
            ["/dev/nvidiactl", "/dev/nvidia-uvm"]
        );
    }

    #[test]
    fn device_patterns_expand_to_the_hosts_nodes_only() {
        let devs = expand_device_patterns(&[
            PathBuf::from("/dev/nul*"),
            PathBuf::from("/dev/zero"),
            PathBuf::from("/dev/no-such-node-prefix*"),
            PathBuf::from("/dev/pt*"),
        ]);
        // /dev/pts is a directory and /dev/ptmx a node: only nodes count.
        assert!(
            devs.starts_with(&[PathBuf::from("/dev/null"), PathBuf::from("/dev/zero")]),
            "{devs:?}"
        );
        assert!(!devs.contains(&PathBuf::from("/dev/pts")), "{devs:?}");
        assert!(
            devs.iter().all(|d| !d.to_string_lossy().contains('*')),
            "{devs:?}"
        );
        let err = parse(&format!("{MINIMAL}[modules.g]\ndevices = [\"/dev/*/x\"]\n")).unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { ref key, .. } if key == "modules.g.devices[0]"),
            "{err}"
        );
    }

    #[test]
    fn a_module_named_twice_is_applied_once() {
        let c = parse(&format!("{MINIMAL}{TWO_MODULES}")).unwrap();
        let mods = c
            .resolve_modules(Some(&["gpu".into(), "gpu".into()]))
            .unwrap();
        assert_eq!(mods.len(), 1);
    }

    #[test]
    fn conflicting_default_modules_are_refused_when_the_config_loads() {
        let err = parse(&format!(
            "{MINIMAL}default_modules = [\"mpich\", \"openmpi\"]\n{TWO_MODULES}"
        ))
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { ref key, .. } if key == "default_modules"),
            "{err}"
        );
        assert!(err.to_string().contains("openmpi"), "{err}");
    }

    #[test]
    fn module_conflicts_and_library_dirs_are_checked() {
        let cases = [
            ("[modules.a]\nconflicts = [\"b\"]", "modules.a.conflicts[0]"),
            ("[modules.a]\nconflicts = [\"a\"]", "modules.a.conflicts[0]"),
            (
                "[modules.a]\nselect_devices_by = [\"\"]",
                "modules.a.select_devices_by[0]",
            ),
            (
                "[modules.a]\nldconfig_dirs = [\"lib\"]",
                "modules.a.ldconfig_dirs[0]",
            ),
            (
                "[modules.a]\nldconfig_dirs = [\"/a:/b\"]",
                "modules.a.ldconfig_dirs[0]",
            ),
            (
                "[modules.\"a/b\"]\nldconfig_dirs = [\"/lib\"]",
                "modules.a/b",
            ),
        ];
        for (extra, key) in cases {
            match parse(&format!("{MINIMAL}{extra}\n")).unwrap_err() {
                ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "{extra}"),
                other => panic!("{extra}: expected Invalid for {key}, got {other}"),
            }
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_file_and_key() {
        let err = parse(&format!("{MINIMAL}imagedir = \"/x\"\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/shifter/shifter.toml"), "{msg}");
        assert!(msg.contains("imagedir"), "{msg}");
        assert!(msg.contains("fix"), "{msg}");
    }

    #[test]
    fn unknown_key_inside_a_module_is_an_error() {
        let err = parse(&format!("{MINIMAL}[modules.x]\nmount = []\n")).unwrap_err();
        assert!(err.to_string().contains("mount"), "{err}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let err = parse("system = \"c1\"\n").unwrap_err();
        assert!(err.to_string().contains("image_dir"), "{err}");
    }

    #[test]
    fn relative_image_dir_is_refused_with_a_fix() {
        let err = parse("system = \"c1\"\nimage_dir = \"images\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ConfigError::Invalid { ref key, .. } if key == "image_dir"),
            "{msg}"
        );
        assert!(msg.contains("absolute"), "{msg}");
    }

    #[test]
    fn bad_values_are_refused_naming_their_key() {
        let cases = [
            ("gateways = [\"gw:7777\"]", "gateways[0]"),
            ("default_image_type = \"oci\"", "default_image_type"),
            ("upper_size = \"lots\"", "upper_size"),
            ("upper_size = \"0\"", "upper_size"),
            ("lookup_timeout_secs = 0", "lookup_timeout_secs"),
            ("default_modules = [\"gpu\"]", "default_modules[0]"),
            (
                "forbidden_destinations = [\"opt\"]",
                "forbidden_destinations[0]",
            ),
            ("site_env = { \"A=B\" = \"x\" }", "site_env"),
            ("[[site_fs]]\nsource = \"home\"", "site_fs[0]"),
            ("[modules.none]", "modules.none"),
            (
                "[modules.g]\ndevices = [\"/etc/passwd\"]",
                "modules.g.devices[0]",
            ),
            (
                "[[extra_users]]\nname = \"a:b\"\nuid = 1\ngid = 1",
                "extra_users[0]",
            ),
        ];
        for (extra, key) in cases {
            let err = parse(&format!("{MINIMAL}{extra}\n")).unwrap_err();
            match &err {
                ConfigError::Invalid { key: k, .. } => assert_eq!(k, key, "{extra}: {err}"),
                other => panic!("{extra}: expected Invalid for {key}, got {other}"),
            }
        }
        let err = parse("system = \"a b\"\nimage_dir = \"/i\"\n").unwrap_err();
        assert!(err.to_string().contains("`system`"), "{err}");
    }

    #[test]
    fn load_refuses_a_group_writable_config() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("shifter.toml");
        std::fs::write(&f, MINIMAL).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = Config::load(&f).unwrap_err();
        assert!(matches!(err, ConfigError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("shifter.toml"), "{err}");
        // The escape hatch for tests reads it anyway.
        assert_eq!(Config::load_untrusted(&f).unwrap().system, "c1");
    }

    #[test]
    fn load_accepts_a_root_owned_config() {
        if !nix::unistd::geteuid().is_root() {
            test_skip::skip(
                "load_accepts_a_root_owned_config",
                "needs root to own the file",
            );
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("shifter.toml");
        std::fs::write(&f, MINIMAL).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(Config::load(&f).unwrap().image_dir, Path::new("/images"));
    }

    #[test]
    fn missing_file_error_names_it() {
        let err = Config::load(Path::new("/nonexistent/shifter.toml")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/shifter.toml"),
            "{err}"
        );
    }
}
