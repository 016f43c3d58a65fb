//! What a site configures for pulls: per-registry transport and credentials, the
//! platform to pick, the blob cache, limits and the squashfs compression.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
pub use shifter_api::Platform;

/// A registry login. Never logged: `Debug` hides the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Transport settings of one registry (keyed by `host[:port]` as in references).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Speak plain HTTP (local test registries). Digests are still verified.
    #[serde(default)]
    pub plain_http: bool,
    /// HTTPS without certificate verification. Digests are still verified.
    #[serde(default)]
    pub insecure: bool,
    /// The registry is on a loopback, private or link-local address, and the
    /// site means it: such addresses are refused for everything else.
    #[serde(default)]
    pub internal: bool,
    /// Extra CA certificate(s), PEM, trusted for this registry only.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Site-wide credentials for this registry (per-user ones come with each pull).
    #[serde(default)]
    pub credentials: Option<Credentials>,
}

/// Squashfs compression, as the site chooses it per system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase", deny_unknown_fields)]
pub enum Compression {
    Gzip { level: u32 },
    Zstd { level: i32 },
    Lz4,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: sqfs_writer::DEFAULT_GZIP_LEVEL,
        }
    }
}

impl Compression {
    /// Parses `gzip`, `gzip:6`, `zstd`, `zstd:3`, `lz4` (the gateway's config form).
    pub fn parse(s: &str) -> Option<Self> {
        let (name, level) = match s.split_once(':') {
            Some((n, l)) => (n, Some(l)),
            None => (s, None),
        };
        match (name, level) {
            ("gzip", None) => Some(Compression::default()),
            ("gzip", Some(l)) => l
                .parse()
                .ok()
                .filter(|l| (1..=9).contains(l))
                .map(|level| Compression::Gzip { level }),
            ("zstd", None) => Some(Compression::Zstd { level: 15 }),
            ("zstd", Some(l)) => l
                .parse()
                .ok()
                .filter(|l| (1..=22).contains(l))
                .map(|level| Compression::Zstd { level }),
            ("lz4", None) => Some(Compression::Lz4),
            _ => None,
        }
    }
}

/// Caps that protect the gateway from hostile or absurd images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Decompressed bytes of all layers together.
    pub max_bytes: u64,
    /// Tar entries of all layers together.
    pub max_entries: u64,
    /// Compressed bytes of all layers together (checked against the manifest before downloading).
    pub max_download_bytes: u64,
    /// Layers per image (Docker itself stops at 127).
    #[serde(default = "default_max_layers")]
    pub max_layers: usize,
}

fn default_max_layers() -> usize {
    256
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 30,
            max_entries: 2_000_000,
            max_download_bytes: 32 << 30,
            max_layers: default_max_layers(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PullConfig {
    /// The registries pulled from (the allow-list, with `default_registry`) and
    /// their settings.
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Also allowed, with default settings (HTTPS, system CAs) unless listed.
    pub default_registry: Option<String>,
    /// Platform picked from an index or manifest list.
    pub platform: Platform,
    /// Content-addressed blob cache shared by all pulls.
    pub cache_dir: PathBuf,
    /// The cache is trimmed to this size (oldest first) after each pull.
    pub cache_max_bytes: u64,
    pub limits: Limits,
    pub keep_setuid: bool,
    pub compression: Compression,
    /// Squashfs block size in bytes.
    pub block_size: u32,
    /// Layers downloaded at once.
    pub concurrent_downloads: usize,
    /// Attempts per request (connection errors, 5xx, 429), with exponential backoff.
    pub attempts: u32,
    /// First backoff delay; doubled after each failed attempt.
    pub backoff: Duration,
    /// A whole pull (resolve, download, convert) is abandoned after this.
    pub timeout: Duration,
    /// One request whose registry sends nothing for this long (a stalled blob) is
    /// abandoned and retried, up to `attempts` times.
    pub stall_timeout: Duration,
}

impl PullConfig {
    /// Defaults for the given cache directory: linux/amd64, gzip 9, 10 GiB cache.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        PullConfig {
            registries: BTreeMap::new(),
            default_registry: Some(shifter_api::reference::DOCKER_HUB.to_owned()),
            platform: Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            },
            cache_dir: cache_dir.into(),
            cache_max_bytes: 10 << 30,
            limits: Limits::default(),
            keep_setuid: false,
            compression: Compression::default(),
            block_size: 128 * 1024,
            concurrent_downloads: 4,
            attempts: 4,
            backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(3600),
            stall_timeout: Duration::from_secs(120),
        }
    }

    pub fn registry(&self, host: &str) -> RegistryConfig {
        self.registries.get(host).cloned().unwrap_or_default()
    }

    /// Is `registry` (as references name it) on the allow-list: a key of
    /// `registries` or the default registry? Host names are case-insensitive.
    pub fn allows(&self, registry: &str) -> bool {
        self.registries
            .keys()
            .chain(self.default_registry.as_ref())
            .any(|r| r.eq_ignore_ascii_case(registry))
    }

    /// The address policy: global addresses, plus the authorities of the
    /// registries configured `internal = true`.
    pub fn address_policy(&self) -> crate::registry::AddressPolicy {
        crate::registry::AddressPolicy::new(
            self.registries
                .iter()
                .filter(|(_, c)| c.internal)
                .map(|(name, c)| crate::registry::policy::authority(name, !c.plain_http)),
        )
    }
}

/// Per-pull choices that differ between systems or users.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Overrides the configured platform.
    pub platform: Option<Platform>,
    pub keep_setuid: Option<bool>,
    pub compression: Option<Compression>,
    /// The caller's own login for this registry (from `shifterimg login`).
    pub credentials: Option<Credentials>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_names_parse_with_optional_levels() {
        assert_eq!(
            Compression::parse("gzip"),
            Some(Compression::Gzip { level: 7 })
        );
        assert_eq!(
            Compression::parse("zstd:3"),
            Some(Compression::Zstd { level: 3 })
        );
        assert_eq!(Compression::parse("lz4"), Some(Compression::Lz4));
        assert_eq!(Compression::parse("gzip:0"), None);
        assert_eq!(Compression::parse("xz"), None);
    }

    #[test]
    fn only_listed_registries_and_the_default_are_allowed() {
        let mut c = PullConfig::new("/tmp/x");
        c.registries.insert(
            "Reg.Example:5000".into(),
            RegistryConfig {
                internal: true,
                plain_http: true,
                ..Default::default()
            },
        );
        assert!(c.allows("reg.example:5000"));
        assert!(c.allows("docker.io"), "the default registry");
        assert!(!c.allows("reg.example:5001"));
        assert!(!c.allows("127.0.0.1:22"));
        c.default_registry = None;
        assert!(!c.allows("docker.io"));
        let p = c.address_policy();
        let u = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(p.check_url(&u("http://reg.example:5000/v2/")).is_ok());
        assert!(p.check_url(&u("http://reg.example:80/v2/")).is_err());
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
