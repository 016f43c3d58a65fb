//! `shifter-config`: converts a Shifter site configuration to shifter-rs.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Parser;

use shifter_config::cli::{Cli, Cmd};
use shifter_config::imagemanager::{self, GatewayOptions};
use shifter_config::udiroot::{self, RuntimeOptions};
use shifter_config::Imported;

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
