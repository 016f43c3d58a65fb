//! `/etc/shifter/imagegw.toml`: what the gateway serves, where images go, who
//! may administer them. Unknown keys are errors so a typo never silently falls
//! back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

pub const DEFAULT_PATH: &str = "/etc/shifter/imagegw.toml";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read gateway config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid gateway config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid gateway config: {0}")]
    Invalid(String),
}

/// A user named in `admins` or `import_users`: a numeric uid or a login name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum UserSpec {
    Uid(u32),
    Name(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Where `<id>.squashfs` and `<id>.json` are published (shared filesystem).
    pub image_dir: PathBuf,
    #[serde(default = "default_munge_socket")]
    pub munge_socket: PathBuf,
    #[serde(default)]
    pub admins: Vec<UserSpec>,
    #[serde(default)]
    pub import_users: Vec<UserSpec>,
    #[serde(default = "default_os")]
    pub os: String,
    #[serde(default = "default_arch")]
    pub arch: String,
    #[serde(default)]
    pub variant: Option<String>,
    /// Keep setuid/setgid bits from image layers (off by default).
    #[serde(default)]
    pub keep_setuid: bool,
    /// squashfs compressor handed to the converter (e.g. `gzip`, `zstd`).
    #[serde(default = "default_compression")]
    pub compression: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Accept self-signed or mismatched TLS certificates.
    #[serde(default)]
    pub insecure: bool,
    /// Talk plain HTTP (e.g. a registry on loopback).
    #[serde(default)]
    pub plain_http: bool,
    /// The registry is on a loopback, private or link-local address: let the
    /// gateway connect there (on this host and port only). Without it such
    /// addresses are refused, for registries, redirects and token servers alike.
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password; kept out of the config so the config can be world-readable.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub systems: BTreeMap<String, SystemConfig>,
    /// The registries the gateway pulls from (with `default_registry`, the
    /// whole allow-list) and their transport settings.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Where Docker Hub references are pulled from; allowed without a
    /// `[registries]` section.
    #[serde(default = "default_registry")]
    pub default_registry: String,
    /// Pulls running at once; further pulls wait as PENDING.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// `autoexpire` removes images not pulled for this many days.
    #[serde(default = "default_expire_days")]
    pub expire_after_days: u64,
    /// `sqlite:///path/to/db` or `postgres://user@host:port/db`.
    #[serde(default = "default_store")]
    pub store: String,
    #[serde(default = "default_work_dir")]
    pub work_dir: PathBuf,
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// Caps on what one image may expand to; layers are hostile input.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[limits]`: unset keys keep the converter's defaults (64 GiB, 2,000,000
/// entries, 32 GiB downloaded), so a site only names what it wants lower or higher.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Decompressed bytes of all layers of one image together.
    #[serde(default)]
    pub max_image_bytes: Option<u64>,
    /// Tar entries of all layers of one image together.
    #[serde(default)]
    pub max_image_entries: Option<u64>,
    /// Compressed layer bytes of one image, checked before downloading.
    #[serde(default)]
    pub max_download_bytes: Option<u64>,
    /// Seconds one pull may take from the first registry request to the
    /// finished squashfs, so a registry that stalls mid-blob ends in FAILURE.
    #[serde(default)]
    pub pull_timeout_secs: Option<u64>,
    /// Seconds a registry may send nothing on one request (a blob stalled mid-
    /// transfer) before that attempt is abandoned and retried (4 attempts).
    #[serde(default)]
    pub stall_timeout_secs: Option<u64>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7777))
}
fn default_munge_socket() -> PathBuf {
    PathBuf::from("/run/munge/munge.socket.2")
}
fn default_os() -> String {
    "linux".into()
}
fn default_arch() -> String {
    "amd64".into()
}
fn default_compression() -> String {
    "gzip".into()
}
fn default_registry() -> String {
    shifter_api::reference::DOCKER_HUB.into()
}
fn default_workers() -> usize {
    2
}
fn default_expire_days() -> u64 {
    90
}
fn default_store() -> String {
    "sqlite:///var/lib/shifter/imagegw.sqlite".into()
}
fn default_work_dir() -> PathBuf {
    PathBuf::from("/var/lib/shifter/work")
}
fn default_cache_dir() -> PathBuf {
    PathBuf::from("/var/cache/shifter")
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.systems.is_empty() {
            return Err(ConfigError::Invalid(
                "no [systems.<name>] section: add one per platform the gateway serves".into(),
            ));
        }
        for (name, sys) in &self.systems {
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !name_ok {
                return Err(ConfigError::Invalid(format!(
                    "system name {name:?}: use letters, digits, '.', '_' and '-'"
                )));
            }
            if !sys.image_dir.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "systems.{name}.image_dir {} must be an absolute path",
                    sys.image_dir.display()
                )));
            }
        }
        if self.workers == 0 {
            return Err(ConfigError::Invalid("workers must be at least 1".into()));
        }
        StoreUrl::parse(&self.store)?;
        Ok(())
    }
}

/// Where records live, from the `store` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreUrl {
    pub fn parse(s: &str) -> Result<StoreUrl, ConfigError> {
        if let Some(path) = s.strip_prefix("sqlite://") {
            if !path.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "store {s:?}: an sqlite store needs an absolute path, as in sqlite:///var/lib/shifter/imagegw.sqlite"
                )));
            }
            Ok(StoreUrl::Sqlite(PathBuf::from(path)))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreUrl::Postgres(s.to_owned()))
        } else {
            Err(ConfigError::Invalid(format!(
                "store {s:?}: use sqlite:///path or postgres://user@host:port/db"
            )))
        }
    }
}

/// Resolves uids and login names to uids; a name that does not exist is a config error.
pub fn resolve_users(specs: &[UserSpec]) -> Result<Vec<u32>, ConfigError> {
    specs
        .iter()
        .map(|s| match s {
            UserSpec::Uid(u) => Ok(*u),
            UserSpec::Name(n) => match nix::unistd::User::from_name(n) {
                Ok(Some(u)) => Ok(u.uid.as_raw()),
                Ok(None) => Err(ConfigError::Invalid(format!(
                    "user {n:?} does not exist (give a uid or an existing login name)"
                ))),
                Err(e) => Err(ConfigError::Invalid(format!(
                    "cannot look up user {n:?}: {e}"
                ))),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [systems.testbed]
        image_dir = "/srv/images"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7777");
        assert_eq!(c.workers, 2);
        let s = &c.systems["testbed"];
        assert_eq!(s.arch, "amd64");
        assert_eq!(s.munge_socket, Path::new("/run/munge/munge.socket.2"));
        assert!(!s.keep_setuid);
        assert!(matches!(StoreUrl::parse(&c.store), Ok(StoreUrl::Sqlite(_))));
        assert!(c.limits.max_image_bytes.is_none());
    }

    #[test]
    fn limits_table_sets_image_caps_and_rejects_unknown_keys() {
        let c = Config::parse(&format!(
            "{MINIMAL}\n[limits]\nmax_image_bytes = 1048576\nmax_image_entries = 100\npull_timeout_secs = 30\n"
        ))
        .unwrap();
        assert_eq!(c.limits.max_image_bytes, Some(1 << 20));
        assert_eq!(c.limits.max_image_entries, Some(100));
        assert_eq!(c.limits.max_download_bytes, None);
        assert_eq!(c.limits.pull_timeout_secs, Some(30));
        let typo = Config::parse(&format!("{MINIMAL}\n[limits]\nmax_bytes = 1\n"));
        assert!(matches!(typo, Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::parse(&format!("{MINIMAL}\nworkerz = 3\n")).unwrap_err();
        assert!(err.to_string().contains("workerz"), "{err}");
        let err = Config::parse("[systems.a]\nimage_dir=\"/x\"\nadmin=[1]\n").unwrap_err();
        assert!(err.to_string().contains("admin"), "{err}");
    }

    #[test]
    fn full_config_parses_users_registries_and_postgres() {
        let c = Config::parse(
            r#"
            listen = "0.0.0.0:8000"
            default_registry = "127.0.0.1:5000"
            workers = 4
            expire_after_days = 7
            store = "postgres://gw@127.0.0.1:5432/gw"
            work_dir = "/w"
            cache_dir = "/c"
            [systems.cluster]
            image_dir = "/images"
            admins = [0, "root"]
            import_users = ["root"]
            os = "linux"
            arch = "arm64"
            variant = "v8"
            keep_setuid = true
            compression = "zstd"
            [registries."127.0.0.1:5000"]
            plain_http = true
            internal = true
            [registries."reg.example:443"]
            ca_file = "/etc/ca.pem"
            username = "bot"
            password_file = "/etc/shifter/reg.pw"
            "#,
        )
        .unwrap();
        assert_eq!(
            StoreUrl::parse(&c.store).unwrap(),
            StoreUrl::Postgres("postgres://gw@127.0.0.1:5432/gw".into())
        );
        let s = &c.systems["cluster"];
        assert_eq!(resolve_users(&s.admins).unwrap(), vec![0, 0]);
        assert!(c.registries["127.0.0.1:5000"].plain_http);
        assert!(c.registries["127.0.0.1:5000"].internal);
        assert!(!c.registries["reg.example:443"].internal, "off unless said");
        assert_eq!(
            c.registries["reg.example:443"].username.as_deref(),
            Some("bot")
        );
    }

    #[test]
    fn bad_values_are_explained() {
        let no_sys = Config::parse("listen = \"127.0.0.1:1\"\nsystems = {}\n").unwrap_err();
        assert!(no_sys.to_string().contains("[systems."), "{no_sys}");
        let rel = Config::parse("[systems.a]\nimage_dir = \"rel\"\n").unwrap_err();
        assert!(rel.to_string().contains("absolute"), "{rel}");
        let store = Config::parse(&format!("store = \"mysql://x\"\n{MINIMAL}")).unwrap_err();
        assert!(store.to_string().contains("sqlite:///"), "{store}");
        let nobody = resolve_users(&[UserSpec::Name("no-such-user-xyz".into())]).unwrap_err();
        assert!(nobody.to_string().contains("no-such-user-xyz"), "{nobody}");
    }
}
