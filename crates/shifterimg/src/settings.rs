//! Where to find the gateways: the site config, overridden by the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use runtime_core::config::{Config, DEFAULT_CONFIG_PATH};
use shifter_api::ImageType;

use crate::cli::Global;

/// Everything the commands need to reach the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub gateways: Vec<String>,
    pub system: String,
    pub munge_socket: PathBuf,
    /// The gateway's account (`gateway_uid`): credentials are restricted to it.
    pub gateway_uid: Option<u32>,
    pub timeout: Duration,
    pub default_type: ImageType,
}

const DEFAULT_TIMEOUT_SECS: u64 = 10;
const DEFAULT_MUNGE_SOCKET: &str = "/run/munge/munge.socket.2";

impl Settings {
    /// Reads the config unless the command line says everything it would.
    pub fn resolve(g: &Global) -> Result<Settings> {
        let explicit = g.config != Path::new(DEFAULT_CONFIG_PATH);
        let enough_without = !g.gateways.is_empty() && g.system.is_some();
        // shifterimg acts with the caller's own rights only, so the file need
        // not pass the root-ownership check the runtime applies.
        let config = if explicit || !enough_without {
            Some(Config::load_untrusted(&g.config).context(
                "cannot use the site config (pass --config PATH, or both --gateway URL and --system NAME)",
            )?)
        } else if g.config.exists() {
            // The command line names gateway and system: the site file only
            // adds defaults, so a broken one is worth a warning, not a failure.
            Config::load_untrusted(&g.config)
                .map_err(|e| tracing::warn!("ignoring the site config: {e}"))
                .ok()
        } else {
            None
        };
        Self::merge(g, config.as_ref())
    }

    fn merge(g: &Global, cfg: Option<&Config>) -> Result<Settings> {
        let gateways: Vec<String> = if g.gateways.is_empty() {
            cfg.map(|c| c.gateways.clone()).unwrap_or_default()
        } else {
            g.gateways.iter().map(|s| with_scheme(s)).collect()
        };
        if gateways.is_empty() {
            bail!(
                "no image gateway configured: add `gateways = [\"http://host:7777\"]` to {} or pass --gateway URL",
                g.config.display()
            );
        }
        let system = match (&g.system, cfg) {
            (Some(s), _) => s.clone(),
            (None, Some(c)) => c.system.clone(),
            (None, None) => {
                bail!("no system given: pass --system NAME or set `system` in the config")
            }
        };
        let default_type = cfg
            .and_then(|c| ImageType::parse(&c.default_image_type))
            .unwrap_or(ImageType::Docker);
        let timeout = g
            .timeout
            .or(cfg.map(|c| c.lookup_timeout_secs))
            .unwrap_or(DEFAULT_TIMEOUT_SECS)
            .max(1);
        Ok(Settings {
            gateways,
            system,
            munge_socket: cfg
                .map(|c| c.munge_socket.clone())
                .unwrap_or_else(|| DEFAULT_MUNGE_SOCKET.into()),
            gateway_uid: cfg.map(|c| c.gateway_account()).transpose()?.flatten(),
            timeout: Duration::from_secs(timeout),
            default_type,
        })
    }
}

/// `host:port` on the command line means plain HTTP, as most sites run it.
fn with_scheme(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(args: &[&str]) -> Global {
        use clap::Parser;
        crate::cli::Cli::try_parse_from(
            std::iter::once("shifterimg")
                .chain(args.iter().copied())
                .chain(["autoexpire"]),
        )
        .unwrap()
        .global
    }

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/shifter/shifter.toml")).unwrap()
    }

    const SITE: &str = r#"
system = "cluster1"
image_dir = "/var/lib/shifter/images"
gateways = ["http://gw1:7777", "http://gw2:7777"]
munge_socket = "/run/munge/alt.socket"
lookup_timeout_secs = 3
gateway_uid = 999
"#;

    #[test]
    fn config_supplies_gateways_system_socket_and_timeout() {
        let s = Settings::merge(&global(&[]), Some(&config(SITE))).unwrap();
        assert_eq!(s.gateways, ["http://gw1:7777", "http://gw2:7777"]);
        assert_eq!(s.system, "cluster1");
        assert_eq!(s.munge_socket, PathBuf::from("/run/munge/alt.socket"));
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert_eq!(s.default_type, ImageType::Docker);
        assert_eq!(s.gateway_uid, Some(999));
    }

    #[test]
    fn command_line_overrides_the_config() {
        let g = global(&[
            "--gateway",
            "127.0.0.1:7777",
            "--system",
            "tb",
            "--timeout",
            "7",
        ]);
        let s = Settings::merge(&g, Some(&config(SITE))).unwrap();
        assert_eq!(s.gateways, ["http://127.0.0.1:7777"]);
        assert_eq!(s.system, "tb");
        assert_eq!(s.timeout, Duration::from_secs(7));
    }

    #[test]
    fn without_config_gateway_and_system_are_required() {
        let g = global(&["--gateway", "http://gw:1"]);
        let err = Settings::merge(&g, None).unwrap_err().to_string();
        assert!(err.contains("--system"), "{err}");
        let g = global(&["--system", "tb"]);
        let err = Settings::merge(&g, None).unwrap_err().to_string();
        assert!(err.contains("--gateway URL"), "{err}");
    }

    #[test]
    fn explicit_missing_config_is_an_error_naming_it() {
        let g = global(&[
            "--config",
            "/nonexistent/shifter.toml",
            "--gateway",
            "http://gw:1",
            "--system",
            "x",
        ]);
        let err = format!("{:#}", Settings::resolve(&g).unwrap_err());
        assert!(err.contains("/nonexistent/shifter.toml"), "{err}");
    }

    #[test]
    fn missing_default_config_is_fine_with_gateway_and_system() {
        if Path::new(DEFAULT_CONFIG_PATH).exists() || std::env::var_os("SHIFTER_CONFIG").is_some() {
            test_skip::skip(
                "missing_default_config_is_fine_with_gateway_and_system",
                "a site config exists here; this test needs none",
            );
            return;
        }
        let g = global(&["--gateway", "http://gw:1", "--system", "x"]);
        let s = Settings::resolve(&g).unwrap();
        assert_eq!(s.system, "x");
        assert_eq!(s.munge_socket, PathBuf::from(DEFAULT_MUNGE_SOCKET));
    }
}
