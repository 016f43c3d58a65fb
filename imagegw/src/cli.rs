//! Command-line options of `shifter-imagegw` (a library module so the man page
//! and completions are generated from the definition the binary parses with).

use std::path::PathBuf;

use clap::Parser;

/// The shifter-rs image gateway.
///
/// Pulls Docker/OCI images from registries on behalf of users, converts them to
/// squashfs and publishes `<id>.squashfs` + `<id>.json` into each system's
/// image directory, where the Slurm plugin and `shifter` find them. Users talk
/// to it with `shifterimg`; every request is authenticated with Munge.
///
/// Run it as a dedicated non-root account that owns the image directories.
/// Logs go to stderr; set RUST_LOG (e.g. `RUST_LOG=shifter_imagegw=debug`)
/// for more detail. SIGTERM stops accepting requests, lets running pulls
/// finish for up to --grace seconds and marks the rest failed.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub struct Cli {
    /// Gateway configuration (TOML; unknown keys are errors).
    #[arg(long, short, default_value = crate::config::DEFAULT_PATH, env = "SHIFTER_IMAGEGW_CONFIG")]
    pub config: PathBuf,
    /// Allow running as root (not recommended: the gateway parses hostile input).
    #[arg(long)]
    pub allow_root: bool,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check: bool,
    /// Seconds running pulls get to finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub grace: u64,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}
