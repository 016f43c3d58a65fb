//! The real pull engine: `shifter-pull`'s [`Puller`] behind the gateway's
//! [`PullEngine`] trait, built from the gateway config.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use shifter_api::record::PullProgress;
use shifter_pull::{Compression, ErrorKind, Progress, PullConfig, PullOptions, Puller};
use thiserror::Error;

use crate::config::Config;
use crate::engine::{EngineError, ProgressSink, PullEngine, PullSpec, Pulled, Stage};

#[derive(Debug, Error)]
pub enum EngineSetupError {
    #[error("systems.{system}.compression {value:?}: use gzip, gzip:N, zstd, zstd:N or lz4")]
    Compression { system: String, value: String },
    #[error("cannot read password_file {path} of registry {registry}: {source}")]
    Password {
        registry: String,
        path: String,
        source: std::io::Error,
    },
    #[error("registries.\"{0}\": username and password_file go together")]
    HalfCredentials(String),
    #[error("cannot set up the pull engine: {0}")]
    Puller(#[from] shifter_pull::PullError),
}

pub struct ShifterPullEngine {
    puller: Puller,
    handle: tokio::runtime::Handle,
}

/// Checks every system's compression setting up front, so a typo stops the
/// gateway at start rather than failing every pull.
pub fn compression_of(system: &str, value: &str) -> Result<Compression, EngineSetupError> {
    Compression::parse(value).ok_or_else(|| EngineSetupError::Compression {
        system: system.to_owned(),
        value: value.to_owned(),
    })
}

impl ShifterPullEngine {
    /// Must be called inside the tokio runtime the gateway serves from.
    pub fn from_config(cfg: &Config) -> Result<ShifterPullEngine, EngineSetupError> {
        let mut pc = PullConfig::new(&cfg.cache_dir);
        // The allow-list: `[registries]` and the default registry.
        pc.default_registry = Some(cfg.default_registry.clone());
        let l = &cfg.limits;
        pc.limits.max_bytes = l.max_image_bytes.unwrap_or(pc.limits.max_bytes);
        pc.limits.max_entries = l.max_image_entries.unwrap_or(pc.limits.max_entries);
        pc.limits.max_download_bytes = l.max_download_bytes.unwrap_or(pc.limits.max_download_bytes);
        if let Some(secs) = l.pull_timeout_secs {
            pc.timeout = std::time::Duration::from_secs(secs);
        }
        if let Some(secs) = l.stall_timeout_secs {
            pc.stall_timeout = std::time::Duration::from_secs(secs.max(1));
        }
        for (name, sys) in &cfg.systems {
            compression_of(name, &sys.compression)?;
        }
        for (host, r) in &cfg.registries {
            let credentials = match (&r.username, &r.password_file) {
                (Some(u), Some(p)) => {
                    let pw = std::fs::read_to_string(p).map_err(|source| {
                        EngineSetupError::Password {
                            registry: host.clone(),
                            path: p.display().to_string(),
                            source,
                        }
                    })?;
                    Some(shifter_pull::Credentials {
                        username: u.clone(),
                        password: pw.trim_end_matches(['\n', '\r']).to_owned(),
                    })
                }
                (None, None) => None,
                _ => return Err(EngineSetupError::HalfCredentials(host.clone())),
            };
            pc.registries.insert(
                host.clone(),
                shifter_pull::RegistryConfig {
                    plain_http: r.plain_http,
                    insecure: r.insecure,
                    internal: r.internal,
                    ca_file: r.ca_file.clone(),
                    credentials,
                },
            );
        }
        Ok(ShifterPullEngine {
            puller: Puller::new(pc)?,
            handle: tokio::runtime::Handle::current(),
        })
    }
}

fn engine_error(e: shifter_pull::PullError) -> EngineError {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::NotFound => EngineError::NotFound(msg),
        ErrorKind::Registry => EngineError::Registry(msg),
        ErrorKind::Rejected => EngineError::Rejected(msg),
        ErrorKind::Internal => EngineError::Internal(msg),
    }
}

fn options(spec: &PullSpec) -> PullOptions {
    PullOptions {
        platform: Some(spec.platform.clone()),
        keep_setuid: Some(spec.keep_setuid),
        compression: Compression::parse(&spec.compression),
        credentials: spec
            .credentials
            .as_ref()
            .map(|c| shifter_pull::Credentials {
                username: c.username.clone(),
                password: c.password.clone(),
            }),
    }
}

impl PullEngine for ShifterPullEngine {
    fn resolve(&self, spec: &PullSpec) -> Result<Option<String>, EngineError> {
        let resolved = self
            .handle
            .block_on(self.puller.resolve(&spec.reference, &options(spec)))
            .map_err(engine_error)?;
        Ok(Some(resolved.id.to_string()))
    }

    fn pull(
        &self,
        spec: &PullSpec,
        staging: &Path,
        progress: &dyn ProgressSink,
    ) -> Result<Pulled, EngineError> {
        let opts = options(spec);
        // The puller calls back from async tasks, where the sink (which
        // writes the store with block_on) must not run; a plain thread
        // receives the progress instead.
        let (tx, rx) = std::sync::mpsc::channel::<Progress>();
        let callback: shifter_pull::ProgressFn = Arc::new(move |p| {
            let _ = tx.send(p);
        });
        let done = Arc::new(AtomicBool::new(false));
        let puller = &self.puller;
        let result = std::thread::scope(|scope| {
            let done2 = done.clone();
            scope.spawn(move || {
                let mut converting = false;
                let mut downloaded = (0, 0);
                loop {
                    let p = match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                        Ok(p) => p,
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            if done2.load(Ordering::Relaxed) {
                                break;
                            }
                            continue;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    match p {
                        Progress::Pulling {
                            downloaded: d,
                            total,
                        } => {
                            downloaded = (d, total);
                            progress.bytes(PullProgress {
                                bytes_downloaded: d,
                                bytes_total: total,
                                ..PullProgress::default()
                            });
                        }
                        Progress::Converting { converted, total } => {
                            if !converting {
                                converting = true;
                                progress.stage(Stage::Conversion);
                            }
                            progress.bytes(PullProgress {
                                bytes_downloaded: downloaded.0,
                                bytes_total: downloaded.1,
                                bytes_converted: converted,
                                bytes_to_convert: total,
                            });
                        }
                    }
                }
            });
            let r =
                self.handle
                    .block_on(puller.pull_into(&spec.reference, staging, &opts, callback));
            done.store(true, Ordering::Relaxed);
            r
        });
        let pulled = result.map_err(engine_error)?;
        let mut meta = pulled.meta;
        meta.size = pulled.size;
        Ok(Pulled {
            meta,
            squashfs: pulled.squashfs_path,
        })
    }
}
