//! The gateway's entry point: resolve a reference to an image id (manifest only),
//! or pull it: download layers concurrently into the verified cache, convert, and
//! publish atomically.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{StreamExt, TryStreamExt};
use oci_spec::image::{ImageConfiguration, ImageManifest};
use shifter_api::{DockerRef, ImageId, ImageMeta};
use tracing::{debug, info};

use crate::cache::BlobCache;
use crate::config::{PullConfig, PullOptions};
use crate::convert::{convert_to_file, ConvertError, ConvertOptions};
use crate::digest::Sha256Digest;
use crate::error::PullError;
use crate::merge::{
    ArrivingBlob, BlobDelivery, DataProgress, Layer, LayerData, MergeError, MergeOptions,
    MergeStats,
};
use crate::meta::image_meta;
use crate::registry::manifest::{self, Document, LayerRef};
use crate::registry::{
    http_client, AddressPolicy, RegistryError, RepoClient, Retry, MAX_CONFIG_BYTES,
};

/// Where a pull is, for the gateway's status (PULLING, then CONVERSION).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Pulling {
        downloaded: u64,
        total: u64,
    },
    /// Layer bytes (as stored) read by the conversion, of the total it will read;
    /// `total` is 0 until the conversion starts.
    Converting {
        converted: u64,
        total: u64,
    },
}

pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A reference resolved to one platform's manifest.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Hex sha256 of the platform manifest.
    pub id: ImageId,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
    pub layers: Vec<LayerRef>,
    /// Metadata for `<id>.json`, without size (known after conversion).
    pub meta: ImageMeta,
}

#[derive(Debug, Clone)]
pub struct PulledImage {
    pub id: ImageId,
    pub meta: ImageMeta,
    pub squashfs_path: PathBuf,
    /// Bytes of the squashfs.
    pub size: u64,
    pub stats: MergeStats,
}

pub struct Puller {
    cfg: PullConfig,
    /// From `cfg`, built once: shared by every client's resolver and redirects.
    policy: AddressPolicy,
    cache: BlobCache,
    /// One connection pool per registry.
    http: Mutex<HashMap<String, reqwest::Client>>,
}

impl Puller {
    pub fn new(cfg: PullConfig) -> Result<Self, PullError> {
        let cache = BlobCache::open(&cfg.cache_dir, cfg.cache_max_bytes)?;
        Ok(Puller {
            policy: cfg.address_policy(),
            cfg,
            cache,
            http: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &PullConfig {
        &self.cfg
    }

    fn client(&self, r: &DockerRef, opts: &PullOptions) -> Result<RepoClient, PullError> {
        if !self.cfg.allows(&r.registry) {
            return Err(RegistryError::NotAllowed {
                registry: r.registry.clone(),
            }
            .into());
        }
        let rc = self.cfg.registry(&r.registry);
        let http = {
            let mut pools = self.http.lock().unwrap_or_else(|e| e.into_inner());
            match pools.get(&r.registry) {
                Some(c) => c.clone(),
                None => {
                    let c = http_client(&r.registry, &rc, self.cfg.stall_timeout, &self.policy)?;
                    pools.insert(r.registry.clone(), c.clone());
                    c
                }
            }
        };
        Ok(RepoClient::new(
            http,
            self.policy.clone(),
            &r.registry,
            &r.repository,
            &rc,
            opts.credentials.clone(),
            Retry {
                attempts: self.cfg.attempts,
                backoff: self.cfg.backoff,
                stall: self.cfg.stall_timeout,
            },
        ))
    }

    /// Resolves `r` to the platform manifest and its config: two or three small
    /// requests, no layers.
    pub async fn resolve(&self, r: &DockerRef, opts: &PullOptions) -> Result<Resolved, PullError> {
        let client = self.client(r, opts)?;
        self.with_timeout(self.resolve_with(&client, r, opts)).await
    }

    async fn resolve_with(
        &self,
        client: &RepoClient,
        r: &DockerRef,
        opts: &PullOptions,
    ) -> Result<Resolved, PullError> {
        let want = opts
            .platform
            .clone()
            .unwrap_or_else(|| self.cfg.platform.clone());
        let reference = r.canonical();
        let mut fetched = client.manifest(r.manifest_reference()).await?;
        // An index may point at another index (rare, but allowed): follow a little.
        let mut hops = 0;
        let manifest = loop {
            match manifest::parse(&fetched.bytes, &fetched.content_type, &reference)? {
                Document::Manifest(m) => break *m,
                Document::Index(i) if hops < 3 => {
                    hops += 1;
                    let (digest, _) = manifest::select_platform(&i, &want, &reference)?;
                    debug!(%reference, %digest, "platform manifest chosen from index");
                    fetched = client.manifest(&digest.to_string()).await?;
                }
                Document::Index(_) => {
                    return Err(RegistryError::Malformed {
                        what: format!("index of {reference}"),
                        why: "indexes nested too deeply".into(),
                    }
                    .into())
                }
            }
        };
        let config_digest =
            Sha256Digest::parse(manifest.config().digest().as_ref()).map_err(|e| {
                RegistryError::Malformed {
                    what: format!("manifest of {reference}"),
                    why: e.to_string(),
                }
            })?;
        let config_bytes = client.small_blob(&config_digest, MAX_CONFIG_BYTES).await?;
        let config: ImageConfiguration =
            serde_json::from_slice(&config_bytes).map_err(|e| RegistryError::Malformed {
                what: format!("image config of {reference}"),
                why: e.to_string(),
            })?;
        let actual = manifest::platform_string(&crate::config::Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: None,
        });
        if config.os().to_string() != want.os
            || config.architecture().to_string() != want.architecture
        {
            return Err(RegistryError::WrongPlatform {
                reference,
                wanted: manifest::platform_string(&want),
                actual,
            }
            .into());
        }
        let layers = manifest::layers(&manifest, &reference)?;
        let id =
            ImageId::parse(fetched.digest.hex()).map_err(|e| PullError::Internal(e.to_string()))?;
        let meta = image_meta(
            id.as_str(),
            r,
            &config,
            layers.iter().map(|l| l.digest.to_string()).collect(),
        );
        Ok(Resolved {
            id,
            manifest,
            config,
            layers,
            meta,
        })
    }

    /// Pulls and converts `r` into `dir/<id>.squashfs` (temp name, fsync, rename).
    /// Writes no metadata: the caller publishes `<id>.json` (see [`write_meta`]).
    pub async fn pull_into(
        &self,
        r: &DockerRef,
        dir: &Path,
        opts: &PullOptions,
        progress: ProgressFn,
    ) -> Result<PulledImage, PullError> {
        self.with_timeout(self.pull_inner(r, dir, opts, progress))
            .await
    }

    /// Pulls, converts and publishes into `image_dir`: `<id>.json` first, then
    /// `<id>.squashfs`, both atomically, so a visible image always has its meta.
    pub async fn pull_to(
        &self,
        r: &DockerRef,
        image_dir: &Path,
        opts: &PullOptions,
        progress: ProgressFn,
    ) -> Result<PulledImage, PullError> {
        let staging = tempfile::Builder::new()
            .prefix(".shifter-pull-staging-")
            .tempdir_in(image_dir)
            .map_err(|source| PullError::Io {
                op: "create staging directory in",
                path: image_dir.to_owned(),
                source,
            })?;
        let mut pulled = self.pull_into(r, staging.path(), opts, progress).await?;
        write_meta(image_dir, &pulled.meta)?;
        let dest = image_dir.join(pulled.id.squashfs_name());
        std::fs::rename(&pulled.squashfs_path, &dest).map_err(|source| PullError::Io {
            op: "rename into",
            path: dest.clone(),
            source,
        })?;
        fsync_dir(image_dir)?;
        pulled.squashfs_path = dest;
        Ok(pulled)
    }

    async fn with_timeout<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, PullError>>,
    ) -> Result<T, PullError> {
        tokio::time::timeout(self.cfg.timeout, f)
            .await
            .map_err(|_| PullError::Timeout {
                secs: self.cfg.timeout.as_secs(),
            })?
    }

    async fn pull_inner(
        &self,
        r: &DockerRef,
        dir: &Path,
        opts: &PullOptions,
        progress: ProgressFn,
    ) -> Result<PulledImage, PullError> {
        let client = self.client(r, opts)?;
        let resolved = self.resolve_with(&client, r, opts).await?;
        if resolved.layers.len() > self.cfg.limits.max_layers {
            return Err(PullError::TooManyLayers {
                count: resolved.layers.len(),
                max: self.cfg.limits.max_layers,
            });
        }
        let total: u64 = resolved.layers.iter().map(|l| l.size).sum();
        if total > self.cfg.limits.max_download_bytes {
            return Err(PullError::TooLarge {
                total,
                max: self.cfg.limits.max_download_bytes,
            });
        }
        info!(reference = %r.canonical(), id = %resolved.id, layers = resolved.layers.len(), bytes = total, "pulling image");
        let started = std::time::Instant::now();

        // Conversion starts at once and reads the layers newest first, each as soon
        // as it is downloaded and verified, so downloading and converting overlap.
        let (arriving, deliveries): (Vec<_>, Vec<_>) = resolved
            .layers
            .iter()
            .map(|l| ArrivingBlob::new(l.size))
            .unzip();
        let mut give_up = GiveUpOnDrop(arriving.clone());
        let layers: Vec<Layer> = resolved
            .layers
            .iter()
            .zip(arriving)
            .map(|(l, a)| Layer {
                name: l.digest.to_string(),
                data: LayerData::Arriving(a),
            })
            .collect();
        let copts = ConvertOptions {
            merge: MergeOptions {
                keep_setuid: opts.keep_setuid.unwrap_or(self.cfg.keep_setuid),
                max_bytes: self.cfg.limits.max_bytes,
                max_entries: self.cfg.limits.max_entries,
            },
            compression: opts.compression.unwrap_or(self.cfg.compression),
            block_size: self.cfg.block_size,
        };
        let dest = dir.join(resolved.id.squashfs_name());
        let dest2 = dest.clone();
        let conversion = Arc::new(HeldProgress::new(Arc::clone(&progress)));
        let held = Arc::clone(&conversion);
        // Its own thread, not the blocking pool: it waits there for the downloads,
        // which need the pool for cache lookups.
        let (done, mut converting) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("shifter-convert".into())
            .spawn(move || {
                let _ = done.send(convert_to_file(&layers, &copts, &dest2, &mut |d| {
                    held.report(d)
                }));
            })
            .map_err(|e| PullError::Internal(format!("cannot start the conversion: {e}")))?;
        let mut downloading =
            Box::pin(self.download(&client, &resolved.layers, deliveries, total, &progress));
        let joined = |r: Result<_, tokio::sync::oneshot::error::RecvError>| {
            r.map_err(|_| PullError::Internal("the conversion thread died".into()))
        };
        let converted = tokio::select! {
            // A download error and a conversion error at once: the download's wins.
            biased;
            d = &mut downloading => match d {
                Ok(()) => {
                    debug!(elapsed = ?started.elapsed(), "layers downloaded and verified");
                    conversion.release();
                    joined((&mut converting).await)?
                }
                Err(e) => {
                    // The conversion stops at its next read; wait for it so its
                    // temporary file is gone before the error is reported.
                    give_up.now();
                    drop(downloading);
                    let _ = converting.await;
                    return Err(e);
                }
            },
            c = &mut converting => match joined(c)? {
                // A layer it needed was lost: the download's own error says why.
                Err(ConvertError::Merge(MergeError::NotDownloaded { layer })) => {
                    downloading.await?;
                    return Err(PullError::Internal(format!(
                        "layer {layer} was downloaded but never reached the conversion"
                    )));
                }
                // It needs every layer, so otherwise it ended early only by failing
                // (the image is bad); returning drops the downloads, cancelling them.
                Err(e) => return Err(e.into()),
                Ok(done) => {
                    downloading.await?;
                    conversion.release();
                    Ok(done)
                }
            },
        };
        let (size, stats) = converted?;
        give_up.0.clear();
        info!(id = %resolved.id, size, files = stats.files, "image converted");

        let keep: HashSet<String> = resolved
            .layers
            .iter()
            .map(|l| l.digest.hex().to_owned())
            .collect();
        let cache = self.cache.clone();
        let _ = tokio::task::spawn_blocking(move || cache.trim(&keep)).await;

        let mut meta = resolved.meta;
        meta.size = size;
        Ok(PulledImage {
            id: resolved.id,
            meta,
            squashfs_path: dest,
            size,
            stats,
        })
    }

    /// Downloads (or finds in the cache) every layer, newest first as the conversion
    /// reads them, and hands each to its delivery once verified.
    async fn download(
        &self,
        client: &RepoClient,
        layers: &[LayerRef],
        deliveries: Vec<BlobDelivery>,
        total: u64,
        progress: &ProgressFn,
    ) -> Result<(), PullError> {
        let downloaded = AtomicU64::new(0);
        let report = |n: u64| {
            let d = downloaded.fetch_add(n, Ordering::Relaxed) + n;
            progress(Progress::Pulling {
                downloaded: d,
                total,
            });
        };
        report(0);
        let _: Vec<()> = futures_util::stream::iter(layers.iter().zip(deliveries).rev())
            .map(|(l, delivery)| {
                let report = &report;
                async move {
                    let cache = self.cache.clone();
                    let (d, size) = (l.digest.clone(), l.size);
                    let hit = tokio::task::spawn_blocking(move || cache.lookup(&d, Some(size)))
                        .await
                        .map_err(|e| PullError::Internal(e.to_string()))??;
                    let blob = match hit {
                        Some(b) => {
                            report(l.size);
                            b
                        }
                        None => {
                            client
                                .blob_to_cache(&l.digest, l.size, &self.cache, report)
                                .await?
                        }
                    };
                    delivery.deliver(blob.file);
                    Ok::<_, PullError>(())
                }
            })
            .buffered(self.cfg.concurrent_downloads.max(1))
            .try_collect()
            .await?;
        Ok(())
    }
}

/// Gives the layers up when the pull ends without its conversion having succeeded
/// (an error, the timeout, a caller that stopped waiting): the conversion thread
/// stops at its next read and never publishes.
struct GiveUpOnDrop(Vec<Arc<ArrivingBlob>>);

impl GiveUpOnDrop {
    fn now(&mut self) {
        for blob in self.0.drain(..) {
            blob.abandon();
        }
    }
}

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        self.now();
    }
}

/// Conversion progress held back while layers are still downloading, so the status
/// reads PULLING until every layer is in, then CONVERSION, never back and forth.
struct HeldProgress {
    progress: ProgressFn,
    state: Mutex<(bool, Option<DataProgress>)>,
}

impl HeldProgress {
    fn new(progress: ProgressFn) -> Self {
        HeldProgress {
            progress,
            state: Mutex::new((false, None)),
        }
    }

    fn report(&self, d: DataProgress) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 = Some(d);
        if state.0 {
            self.send(d);
        }
    }

    /// From now on conversion progress goes out; the latest figure goes out now.
    fn release(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 {
            return;
        }
        state.0 = true;
        self.send(state.1.unwrap_or_default());
    }

    fn send(&self, d: DataProgress) {
        (self.progress)(Progress::Converting {
            converted: d.read,
            total: d.total,
        });
    }
}

/// Writes `<id>.json` atomically (temp, fsync, rename, fsync dir); mode 0644 for
/// public images and 0600 for ACL'd ones.
pub fn write_meta(image_dir: &Path, meta: &ImageMeta) -> Result<PathBuf, PullError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dest = image_dir.join(format!("{}.json", meta.id));
    let io = |op: &'static str| {
        let path = dest.clone();
        move |source| PullError::Io { op, path, source }
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".shifter-pull-meta-")
        .tempfile_in(image_dir)
        .map_err(io("create temporary file for"))?;
    tmp.write_all(meta.to_json().as_bytes())
        .map_err(io("write"))?;
    tmp.as_file().sync_all().map_err(io("fsync"))?;
    let mode = if meta.acl.is_public() { 0o644 } else { 0o600 };
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod"))?;
    tmp.persist(&dest).map_err(|e| io("rename to")(e.error))?;
    fsync_dir(image_dir)?;
    Ok(dest)
}

fn fsync_dir(dir: &Path) -> Result<(), PullError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| PullError::Io {
            op: "fsync",
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use axum::Router;

    use super::*;
    use crate::config::RegistryConfig;

    fn sha(data: &[u8]) -> String {
        Sha256Digest::of(data).to_string()
    }

    /// One layer as a fake registry serves it: the bytes the manifest describes, the
    /// bytes it sends, and how long it waits before sending them.
    struct Served {
        real: Vec<u8>,
        sent: Vec<u8>,
        delay: Duration,
    }

    /// A registry on loopback serving one image, `img:latest`, of these layers (base
    /// first). Returns its address.
    async fn fake_registry(layers: Vec<Served>) -> String {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha(&l.real)).collect();
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes();
        let descs: Vec<_> = layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha(&l.real), "size": l.real.len(),
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::registry::manifest::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(&config), "size": config.len()},
            "layers": descs,
        })
        .to_string();
        let mut blobs: HashMap<String, (Vec<u8>, Duration)> = layers
            .into_iter()
            .map(|l| (sha(&l.real), (l.sent, l.delay)))
            .collect();
        blobs.insert(sha(&config), (config, Duration::ZERO));
        let blobs = Arc::new(blobs);
        let serve = move |uri: axum::http::Uri| {
            let (manifest, blobs) = (manifest.clone(), Arc::clone(&blobs));
            async move {
                use axum::response::IntoResponse;
                let path = uri.path();
                if path.ends_with("/manifests/latest") {
                    let ct = crate::registry::manifest::OCI_MANIFEST;
                    return ([("content-type", ct)], manifest).into_response();
                }
                let digest = path.rsplit('/').next().unwrap_or_default();
                match blobs.get(digest) {
                    Some((bytes, delay)) => {
                        tokio::time::sleep(*delay).await;
                        bytes.clone().into_response()
                    }
                    None => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, Router::new().fallback(serve)).await });
        addr
    }

    fn puller_for(addr: &str, dir: &Path, timeout: Option<Duration>) -> Puller {
        let mut cfg = PullConfig::new(dir.join("cache"));
        cfg.registries.insert(
            addr.to_owned(),
            RegistryConfig {
                plain_http: true,
                internal: true,
                ..Default::default()
            },
        );
        if let Some(t) = timeout {
            cfg.timeout = t;
        }
        Puller::new(cfg).unwrap()
    }

    /// A two-layer image whose base layer the registry corrupts (same size, other
    /// bytes) and whose newest layer it sends late, so the conversion is running when
    /// the base layer's download fails.
    async fn lying_registry() -> String {
        let base = crate::test_tar(&[("etc/base", b"base")]);
        let top = crate::test_tar(&[("etc/top", b"top")]);
        let mut corrupt = base.clone();
        corrupt[600] ^= 0xff;
        fake_registry(vec![
            Served {
                real: base,
                sent: corrupt,
                delay: Duration::ZERO,
            },
            Served {
                real: top.clone(),
                sent: top,
                delay: Duration::from_millis(300),
            },
        ])
        .await
    }

    #[tokio::test]
    async fn a_layer_failing_its_digest_while_converting_is_reported_as_the_registry_lie() {
        let addr = lying_registry().await;
        let cache = tempfile::tempdir().unwrap();
        let p = puller_for(&addr, cache.path(), None);
        let r = DockerRef::parse(&format!("{addr}/img:latest")).unwrap();
        let out = cache.path().join("images");
        std::fs::create_dir(&out).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = Arc::clone(&events);
        let e = p
            .pull_to(
                &r,
                &out,
                &PullOptions::default(),
                Arc::new(move |e| ev.lock().unwrap().push(e)),
            )
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("sha256")
                && !msg.contains("not downloaded")
                && !msg.contains("never reached"),
            "the registry's lie is the error: {msg}"
        );
        assert_eq!(e.kind(), crate::error::ErrorKind::Rejected, "{msg}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "nothing published or left behind"
        );
        assert!(
            !events
                .lock()
                .unwrap()
                .iter()
                .any(|e| matches!(e, Progress::Converting { .. })),
            "no conversion status while layers were still downloading"
        );
    }

    #[tokio::test]
    async fn a_pull_timing_out_while_converting_leaves_nothing_behind_later() {
        // The newest layer takes 300 ms: the conversion is waiting for it.
        let addr = lying_registry().await;
        let cache = tempfile::tempdir().unwrap();
        let p = puller_for(&addr, cache.path(), Some(Duration::from_millis(150)));
        let r = DockerRef::parse(&format!("{addr}/img:latest")).unwrap();
        let out = cache.path().join("images");
        std::fs::create_dir(&out).unwrap();
        let e = p
            .pull_into(&r, &out, &PullOptions::default(), Arc::new(|_| {}))
            .await
            .unwrap_err();
        assert!(matches!(e, PullError::Timeout { .. }), "{e}");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
        assert!(left.is_empty(), "the abandoned conversion left {left:?}");
    }

    /// Incompressible bytes, so compressing them takes time.
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[tokio::test]
    async fn a_pull_timing_out_after_every_layer_arrived_stops_its_conversion() {
        let big = crate::test_tar(&[("data/noise", &noise(24 << 20))]);
        let addr = fake_registry(vec![Served {
            real: big.clone(),
            sent: big,
            delay: Duration::ZERO,
        }])
        .await;
        let cache = tempfile::tempdir().unwrap();
        let r = DockerRef::parse(&format!("{addr}/img:latest")).unwrap();
        let out = cache.path().join("images");
        std::fs::create_dir(&out).unwrap();
        // Once with no time limit, to fill the blob cache and see how long the
        // conversion takes on this machine; then with a limit that fires half way
        // through a conversion that starts at once (the blob is cached).
        let started = Instant::now();
        let p = puller_for(&addr, cache.path(), None);
        let full = p
            .pull_into(&r, &out, &PullOptions::default(), Arc::new(|_| {}))
            .await
            .unwrap();
        let took = started.elapsed();
        std::fs::remove_file(&full.squashfs_path).unwrap();
        let p = puller_for(&addr, cache.path(), Some(took / 2));
        let e = p
            .pull_into(&r, &out, &PullOptions::default(), Arc::new(|_| {}))
            .await
            .unwrap_err();
        assert!(matches!(e, PullError::Timeout { .. }), "{e}");
        // Without being stopped, the conversion would publish within `took`.
        tokio::time::sleep(took * 2).await;
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
        assert!(left.is_empty(), "the abandoned conversion left {left:?}");
    }

    #[tokio::test]
    async fn a_registry_that_never_answers_hits_the_overall_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hang = Router::new().fallback(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        });
        tokio::spawn(async move { axum::serve(listener, hang).await });
        let cache = tempfile::tempdir().unwrap();
        let mut cfg = PullConfig::new(cache.path());
        cfg.registries.insert(
            addr.clone(),
            RegistryConfig {
                plain_http: true,
                internal: true,
                ..Default::default()
            },
        );
        cfg.timeout = Duration::from_millis(300);
        let p = Puller::new(cfg).unwrap();
        let r = DockerRef::parse(&format!("{addr}/img:latest")).unwrap();
        let start = Instant::now();
        let e = p
            .pull_to(&r, cache.path(), &PullOptions::default(), Arc::new(|_| {}))
            .await
            .unwrap_err();
        assert!(matches!(e, PullError::Timeout { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let left: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "blobs" && n != "tmp")
            .collect();
        assert!(left.is_empty(), "no staging left behind: {left:?}");
    }
}
