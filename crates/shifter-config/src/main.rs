//! `shifter-config`: converts a Shifter site configuration to shifter-rs.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use shifter_config::imagemanager::{self, GatewayOptions};
use shifter_config::udiroot::{self, RuntimeOptions};
use shifter_config::Imported;

#[derive(Debug, Parser)]
#[command(
    name = "shifter-config",
    version,
    about = "Import a NERSC Shifter configuration into shifter-rs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
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

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Import {
            udiroot_conf,
            output,
            force,
            gateway_user,
        } => {
            let text = read(&udiroot_conf)?;
            let opts = RuntimeOptions {
                gateway_uid: gateway_user.as_deref().map(uid_of).transpose()?,
            };
            let imported = udiroot::import_with(&text, &udiroot_conf.display().to_string(), &opts)?;
            emit(&imported, output.as_deref(), force)
        }
        Cmd::ImportGateway {
            imagemanager_json,
            output,
            force,
            store,
        } => {
            let text = read(&imagemanager_json)?;
            let imported = imagemanager::import(
                &text,
                &imagemanager_json.display().to_string(),
                &GatewayOptions { store },
            )?;
            emit(&imported, output.as_deref(), force)
        }
    }
}

fn uid_of(user: &str) -> Result<u32> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(user) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => {
            bail!("--gateway-user {user:?}: no such user; give a uid or an existing login name")
        }
        Err(e) => bail!("--gateway-user {user:?}: cannot look it up: {e}"),
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn emit(imported: &Imported, output: Option<&Path>, force: bool) -> Result<()> {
    for i in &imported.ignored {
        eprintln!("note: {i}");
    }
    let Some(out) = output else {
        std::io::stdout().write_all(imported.toml.as_bytes())?;
        return Ok(());
    };
    if out.exists() && !force {
        bail!(
            "{} exists; pass --force to replace it or choose another -o",
            out.display()
        );
    }
    // Write next to the target and rename, so a crash never leaves half a config.
    let tmp = out.with_extension("toml.tmp");
    std::fs::write(&tmp, &imported.toml)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    // The runtime refuses a group/world-writable config; do not let a loose
    // umask produce one.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot set the mode of {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
