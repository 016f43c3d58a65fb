//! `shifter`: run a command in an image. Installed setuid-root (or run by
//! root with `--user`), it prepares a container root with runtime-core,
//! enters it, drops to the user with read-back checks and execs the command.

mod command;

use shifter::cli;
mod privilege;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use runtime_core::sys::real::RealSys;
use runtime_core::{env, image, setup, Config, UserInfo, Volume};
use shifter_api::{ImageId, ImageRef, ImageType};

use crate::cli::Cli;
use crate::privilege::Invocation;

fn main() {
    // Before anything else reads it: the environment as the caller gave it,
    // for the container (the privileged process itself then drops the parts
    // that would steer it, see `privilege::harden`).
    let job_env: env::Env = std::env::vars().collect();
    let inv = Invocation::current();
    if inv.is_setuid() {
        privilege::harden();
    }
    let cli = Cli::parse();
    if inv.is_setuid() {
        privilege::clear_environment();
    }
    init_logging(inv.is_setuid());
    let (code, message) = match run(cli, inv, job_env) {
        Ok(failure) => (failure.code, failure.message),
        Err(e) => (1, format!("error: {}", chain(&e))),
    };
    eprintln!("shifter: {message}");
    std::process::exit(code);
}

/// `SHIFTER_LOG` picks the level, except in a setuid run: there the caller
/// could make root log what it sees (or a library's debug output, which may
/// carry request headers), so only warnings and errors are ever printed.
fn init_logging(setuid: bool) {
    let filter = if setuid {
        tracing_subscriber::EnvFilter::new("warn")
    } else {
        tracing_subscriber::EnvFilter::try_from_env("SHIFTER_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // Beside the user's filter, never instead of it: no directive of theirs
    // can re-enable ureq's header dump.
    tracing_subscriber::registry()
        .with(tracing_subscriber::filter::filter_fn(|m| {
            gw_client::http_log_allowed(m.target(), m.level())
        }))
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .init();
}

/// The error and its causes, skipping a cause whose text the message above
/// it already includes (library errors carry their cause in their message).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Runs the command; returns only when it could not be executed (the
/// failure carries the shell-style exit code 126/127).
fn run(cli: Cli, inv: Invocation, job_env: env::Env) -> Result<command::ExecFailure> {
    if inv.euid != 0 {
        bail!("shifter must run as root or be installed setuid-root (chown root; chmod u+s)");
    }
    let uid = inv
        .target_uid(cli.user.as_deref())
        .map_err(|e| anyhow!(e))?;
    tracing::debug!(setuid = inv.is_setuid(), uid, "caller");
    if uid == 0 {
        bail!("refusing to run a container as root (uid 0); as root, pass --user=NAME");
    }
    let (config_path, ignored) = inv.config_path(cli.config.as_deref());
    if ignored {
        tracing::warn!(
            "ignoring --config/SHIFTER_CONFIG: shifter runs setuid, so only {} is trusted",
            config_path.display()
        );
    }
    let cfg = Config::load(&config_path).context("loading the site config")?;
    let user = UserInfo::lookup(uid)?;

    let request = cli.image.trim().to_owned();
    let default_type = ImageType::parse(&cfg.default_image_type).unwrap_or(ImageType::Docker);
    let reference =
        ImageRef::parse_with_default(&request, default_type).context("parsing --image")?;
    // The lookup talks to the network and to munged: as the user, so the
    // credential names the user (Munge names the caller by effective uid).
    let id = privilege::as_user(&user, || resolve_image(&cfg, &reference))??;
    let img = image::check_image(&cfg, &id, &user)?;

    let volumes = Volume::parse_all(&cli.volumes)?;
    let module_names = cli
        .module
        .as_deref()
        .map(runtime_core::config::parse_module_list)
        .transpose()
        .map_err(|e| anyhow!("--module: {e}"))?;
    let resolved = cfg
        .resolve_modules(module_names.as_deref())
        .map_err(|e| anyhow!(e))?;
    // As in the Slurm plugin: the step's GPU variables (SLURM_STEP_GPUS,
    // CUDA_VISIBLE_DEVICES, ...) pick the numbered devices; they are read from
    // the caller's environment even with --clearenv, which only concerns the
    // container's.
    let selected = select_devices(&resolved, |k| job_env.get(k).cloned());
    let modules: Vec<(&str, &runtime_core::Module)> =
        selected.iter().map(|(name, m)| (*name, m)).collect();

    // Everything the user asked for is read before we touch the mount
    // namespace; files named by the user are read with the user's rights.
    let extra_env = user_env(&cli, &user)?;
    let job_env: env::Env = if cli.clearenv {
        env::Env::new()
    } else {
        job_env
    };
    let cwd = std::env::current_dir().ok();

    let sys = RealSys;
    let root = setup::prepare(
        &sys,
        &cfg,
        &img,
        &user,
        &setup::Request {
            volumes: &volumes,
            modules: &modules,
            sshd: None,
        },
    )?;
    runtime_core::enter(&sys, &root)?;
    runtime_core::drop_to_user(&sys, &user)?;

    // `id:<hex>`, as the Slurm plugin sets it, so a nested launch pins the same image.
    let pinned = format!("id:{id}");
    let mut container_env =
        env::container_env(&job_env, &img.meta().env, &modules, &cfg, &pinned, &request);
    container_env.extend(extra_env);
    let workdir = match &cli.workdir {
        Some(Some(dir)) => PathBuf::from(dir),
        Some(None) => env::choose_workdir(None, img.meta().workdir.as_deref(), |_| false),
        None => env::choose_workdir(cwd.as_deref(), img.meta().workdir.as_deref(), |p| {
            p.is_dir()
        }),
    };
    if let Err(e) = std::env::set_current_dir(&workdir) {
        if cli.workdir.is_some() {
            bail!(
                "cannot change to working directory {}: {e}",
                workdir.display()
            );
        }
        let _ = std::env::set_current_dir("/");
    }
    let argv = command::argv(
        &cli.command,
        &cli.entrypoint,
        &img.meta().entrypoint,
        &img.meta().cmd,
    );
    privilege::restore_caller_state();
    Ok(command::exec(&argv, &container_env))
}

/// Each enabled module with only the devices the caller was given (see
/// `Module::select_devices`).
fn select_devices<'c>(
    modules: &[(&'c str, &runtime_core::Module)],
    job_env: impl Fn(&str) -> Option<String>,
) -> Vec<(&'c str, runtime_core::Module)> {
    modules
        .iter()
        .map(|(name, m)| (*name, m.select_devices(&job_env)))
        .collect()
}

/// Turns a reference into an image id: `id:` directly, tags through the gateway.
fn resolve_image(cfg: &Config, reference: &ImageRef) -> Result<ImageId> {
    if let ImageRef::Id(id) = reference {
        return Ok(id.clone());
    }
    if cfg.gateways.is_empty() {
        bail!("tag lookup needs a gateway: set `gateways` in the site config, or use --image=id:<id> (see `shifterimg lookup`)");
    }
    // Restricted to the gateway's account: a credential sent to an impostor
    // at a gateway address cannot be replayed at the real gateway.
    let client = gw_client::Client::new(
        cfg.gateways.clone(),
        cfg.system.clone(),
        Duration::from_secs(cfg.lookup_timeout_secs),
        Some(cfg.munge_socket.clone()),
        cfg.gateway_account()?,
    )?;
    // The same rule as the plugin's: only a READY image runs.
    gw_client::resolve_ready(&client, reference).with_context(|| {
        format!("looking up {reference} (pull it first with `shifterimg pull {reference}`)")
    })
}

/// `--env-file` (read as the user) and `--env`, in that order.
fn user_env(cli: &Cli, user: &UserInfo) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for f in &cli.env_file {
        let text =
            read_as_user(f, user).with_context(|| format!("reading --env-file {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = split_kv(line)
                .with_context(|| format!("{}:{}: expected KEY=VALUE", f.display(), n + 1))?;
            out.insert(k, v);
        }
    }
    for kv in &cli.env {
        let (k, v) = split_kv(kv).with_context(|| format!("--env {kv:?}: expected KEY=VALUE"))?;
        out.insert(k, v);
    }
    Ok(out)
}

fn split_kv(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
}

/// Reads a small file the user named, with the user's permissions (so a
/// setuid shifter cannot be used to read root's files).
fn read_as_user(path: &Path, user: &UserInfo) -> Result<String> {
    use std::io::Read;
    let sys = RealSys;
    let (handle, kind) = runtime_core::sys::Sys::open_as_user(&sys, path, &user.creds())?;
    if kind != runtime_core::sys::NodeKind::File {
        bail!("not a regular file");
    }
    let mut text = String::new();
    std::fs::File::open(handle.path())?
        .take(1 << 20)
        .read_to_string(&mut text)?;
    Ok(text)
}
