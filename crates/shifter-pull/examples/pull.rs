//! Pull one image to a directory: `pull <ref> <image_dir> [--cache DIR]
//! [--compression gzip|gzip:N|zstd:N|lz4] [--plain-http HOST:PORT]... [--arch ARCH]`.
//! Used by the benchmark and for trying registries by hand.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use shifter_api::DockerRef;
use shifter_pull::{Compression, Progress, PullConfig, PullOptions, Puller, RegistryConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut cache = PathBuf::from("/tmp/shifter-pull-cache");
    let mut compression = Compression::default();
    let mut plain = Vec::new();
    let mut arch = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cache" => cache = args.next().context("--cache DIR")?.into(),
            "--compression" => {
                let c = args.next().context("--compression NAME")?;
                compression =
                    Compression::parse(&c).with_context(|| format!("unknown compression {c}"))?;
            }
            "--plain-http" => plain.push(args.next().context("--plain-http HOST:PORT")?),
            "--arch" => arch = Some(args.next().context("--arch ARCH")?),
            _ => positional.push(a),
        }
    }
    let [reference, dir] = positional.as_slice() else {
        bail!("usage: pull <ref> <image_dir> [--cache DIR] [--compression C] [--plain-http HOST:PORT] [--arch A]");
    };
    let r = DockerRef::parse(reference)?;
    let mut cfg = PullConfig::new(cache);
    cfg.compression = compression;
    for host in plain {
        cfg.registries.insert(
            host,
            RegistryConfig {
                plain_http: true,
                // --plain-http names local test registries.
                internal: true,
                ..Default::default()
            },
        );
    }
    if let Some(a) = arch {
        cfg.platform.architecture = a;
    }
    let puller = Puller::new(cfg)?;
    let start = Instant::now();
    let progress = Arc::new(|p: Progress| tracing::debug!(?p, "progress"));
    let img = puller
        .pull_to(&r, dir.as_ref(), &PullOptions::default(), progress)
        .await?;
    println!(
        "{} {} {} bytes in {:.2?}",
        img.id,
        img.squashfs_path.display(),
        img.size,
        start.elapsed()
    );
    Ok(())
}
