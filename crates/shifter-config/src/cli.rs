//! Command-line syntax of `shifter-config` (a library module so the man page
//! and completions are generated from the definition the binary parses with).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "shifter-config",
    version,
    about = "Import a NERSC Shifter configuration into shifter-rs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Convert udiRoot.conf into shifter.toml.
    Import {
        /// Shifter's udiRoot.conf.
        udiroot_conf: PathBuf,
        /// Where to write shifter.toml (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
        /// The account the shifter-rs gateway runs as (name or uid); the
        /// runtime then also trusts image files it owns.
        #[arg(long, value_name = "USER")]
        gateway_user: Option<String>,
    },
    /// Convert the gateway's imagemanager.json into imagegw.toml.
    ImportGateway {
        /// Shifter's imagemanager.json.
        imagemanager_json: PathBuf,
        /// Where to write imagegw.toml (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the output file if it exists.
        #[arg(long)]
        force: bool,
        /// Record store replacing MongoDB: sqlite:///path or postgres://user@host/db.
        #[arg(long)]
        store: Option<String>,
    },
}
