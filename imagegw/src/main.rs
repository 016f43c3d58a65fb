//! `shifter-imagegw`: the image gateway service.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use shifter_imagegw::auth::MungeDecoder;
use shifter_imagegw::cli::Cli;
use shifter_imagegw::config::{self, Config, StoreUrl};
use shifter_imagegw::engine::PullEngine;
use shifter_imagegw::pull_engine::{compression_of, ShifterPullEngine};
use shifter_imagegw::state::{AppState, SystemState};
use shifter_imagegw::store::{CachedStore, PostgresStore, SqliteStore, Store};
use shifter_imagegw::{app, jobs};

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn pull_engine(cfg: &Config) -> Result<Arc<dyn PullEngine>> {
    Ok(Arc::new(ShifterPullEngine::from_config(cfg)?))
}

async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>> {
    // SQLite has one writer, this gateway; PostgreSQL may be shared by replicas.
    let (inner, ttl): (Arc<dyn Store>, _) = match StoreUrl::parse(&cfg.store)? {
        StoreUrl::Sqlite(path) => {
            let p = path.clone();
            let s = tokio::task::spawn_blocking(move || SqliteStore::open(&p))
                .await?
                .with_context(|| format!("opening sqlite store {}", path.display()))?;
            (Arc::new(s), None)
        }
        StoreUrl::Postgres(url) => (
            Arc::new(
                PostgresStore::connect(&url)
                    .await
                    .context("connecting to the postgres store (check `store` in the config)")?,
            ),
            Some(Duration::from_secs(2)),
        ),
    };
    Ok(Arc::new(CachedStore::new(inner, ttl)))
}

fn build_systems(cfg: &Config) -> Result<Vec<SystemState>> {
    let mut out = Vec::new();
    for (name, sys) in &cfg.systems {
        let md = std::fs::metadata(&sys.image_dir).with_context(|| {
            format!(
                "image_dir {} of system {name} (create it, owned by the gateway account, mode 0755)",
                sys.image_dir.display()
            )
        })?;
        if !md.is_dir() {
            bail!(
                "image_dir {} of system {name} is not a directory",
                sys.image_dir.display()
            );
        }
        out.push(SystemState {
            name: name.clone(),
            cfg: sys.clone(),
            admins: config::resolve_users(&sys.admins)?,
            import_users: config::resolve_users(&sys.import_users)?,
            decoder: Arc::new(MungeDecoder {
                socket: sys.munge_socket.clone(),
            }),
        });
    }
    Ok(out)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = Config::load(&cli.config)?;
    let systems = build_systems(&cfg)?;
    for (name, sys) in &cfg.systems {
        compression_of(name, &sys.compression)?;
    }
    if cli.check {
        println!("{}: ok", cli.config.display());
        return Ok(());
    }
    let store = open_store(&cfg).await?;
    let mut state = AppState::new(systems, store, pull_engine(&cfg)?, cfg.workers);
    state.default_registry = cfg.default_registry.clone();
    state.expire_after_secs =
        i64::try_from(cfg.expire_after_days.saturating_mul(86400)).unwrap_or(i64::MAX);
    let state = Arc::new(state);
    jobs::recover(&state)
        .await
        .context("recovering interrupted pulls")?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, systems = ?state.systems.keys().collect::<Vec<_>>(), "gateway ready");
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    jobs::drain(&state, Duration::from_secs(cli.grace)).await;
    tracing::info!("gateway stopped");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_json);
    if nix::unistd::geteuid().is_root() && !cli.allow_root {
        eprintln!(
            "shifter-imagegw: refusing to run as root; run it as the gateway account (e.g. `runuser -u shiftergw -- shifter-imagegw`) or pass --allow-root"
        );
        return std::process::ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shifter-imagegw: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // A conversion still running on a blocking thread after the drain must not
    // hold the exit: its job is already marked FAILURE.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shifter-imagegw: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
