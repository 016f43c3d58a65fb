//! End-to-end tests of the pull engine (`shifter-pull`) against the local registry:
//! every test image converted and compared entry for entry with `umoci unpack` +
//! `mksquashfs`, mounted by the kernel, reproducible, platform selection, and the
//! registry protocol's hostile and authenticated paths (lying digests, basic auth
//! on a second docker-registry, a bearer token server with a foreign-host redirect).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use shifter_api::DockerRef;
use shifter_integration::Testbed;
use shifter_pull::{
    Credentials, Platform, Progress, PullConfig, PullError, PullOptions, PulledImage, Puller,
    RegistryConfig,
};

const STEP: Duration = Duration::from_secs(120);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A puller speaking plain http to the given registries, with its own cache.
fn puller(cache: &Path, plain_http: &[&str], keep_setuid: bool) -> Puller {
    let mut cfg = PullConfig::new(cache);
    for r in plain_http {
        cfg.registries.insert(
            (*r).to_owned(),
            RegistryConfig {
                plain_http: true,
                // The cluster's registries are on loopback.
                internal: true,
                ..Default::default()
            },
        );
    }
    cfg.keep_setuid = keep_setuid;
    cfg.attempts = 2;
    cfg.backoff = Duration::from_millis(50);
    cfg.timeout = STEP;
    Puller::new(cfg).unwrap()
}

fn pull(
    rt: &tokio::runtime::Runtime,
    p: &Puller,
    reference: &str,
    dir: &Path,
    opts: &PullOptions,
) -> Result<PulledImage, PullError> {
    let r = DockerRef::parse(reference).unwrap();
    rt.block_on(p.pull_to(&r, dir, opts, Arc::new(|_| {})))
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `unsquashfs -lln`, one line per entry, without the `squashfs-root` prefix.
fn listing(sqfs: &Path) -> Vec<String> {
    sh(Command::new("unsquashfs").arg("-lln").arg(sqfs))
        .lines()
        .filter(|l| l.contains("squashfs-root"))
        .map(|l| l.replacen("squashfs-root", "", 1))
        .collect()
}

/// The reference conversion: what Shifter's and Sarus's gateways do.
fn reference_squashfs(registry: &str, image: &str, work: &Path) -> PathBuf {
    let oci = work.join("oci");
    sh(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--override-os",
            "linux",
            "--override-arch",
            "amd64",
        ])
        .arg(format!("docker://{registry}/{image}"))
        .arg(format!("oci:{}:ref", oci.display())));
    let bundle = work.join("bundle");
    sh(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:ref", oci.display()))
        .arg(&bundle));
    let out = work.join("ref.squashfs");
    sh(Command::new("mksquashfs")
        .arg(bundle.join("rootfs"))
        .arg(&out)
        .args(["-noappend", "-no-xattrs", "-quiet", "-no-progress"]));
    out
}

/// Entry-for-entry comparison, allowing the documented differences: device
/// nodes, fifos and sockets are dropped (so the size of a directory that held
/// them differs), and the root directory's time (umoci stamps it with the unpack
/// time when no layer has a `./` entry).
fn assert_same_tree(image: &str, ours: &[String], reference: &[String]) {
    let fields = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let dropped_in: BTreeSet<String> = reference
        .iter()
        .filter(|l| matches!(l.as_bytes()[0], b'c' | b'b' | b'p' | b's'))
        .filter_map(|l| {
            fields(l)
                .get(5)
                .and_then(|p| p.rsplit_once('/'))
                .map(|(dir, _)| dir.to_owned())
        })
        .collect();
    let norm = |lines: &[String]| -> BTreeSet<String> {
        lines
            .iter()
            .filter(|l| !matches!(l.as_bytes()[0], b'c' | b'b' | b'p' | b's'))
            .map(|l| {
                let mut f = fields(l);
                if f.len() == 5 {
                    return format!("ROOT {} {}", f[0], f[1]);
                }
                if f[0].starts_with('d') && dropped_in.contains(&f[5]) {
                    f[2] = "<size>".into();
                }
                f.join(" ")
            })
            .collect()
    };
    let (a, b) = (norm(ours), norm(reference));
    let only_ours: Vec<_> = a.difference(&b).collect();
    let only_ref: Vec<_> = b.difference(&a).collect();
    assert!(only_ours.is_empty() && only_ref.is_empty(), "{image}: trees differ\nonly in ours:\n{only_ours:#?}\nonly in umoci+mksquashfs:\n{only_ref:#?}");
    assert!(a.len() > 10, "{image}: suspiciously small tree: {a:#?}");
}

fn images(tb: &Testbed) -> Vec<String> {
    tb.var("SHIFTER_IMAGES")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_test_image_matches_umoci_plus_mksquashfs_entry_for_entry() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let p = puller(&tmp.path().join("cache"), &[tb.registry()], true);
    for image in images(&tb) {
        let dir = tmp.path().join(image.replace(':', "_"));
        std::fs::create_dir_all(dir.join("ref")).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = Arc::clone(&events);
        let r = DockerRef::parse(&format!("{}/{image}", tb.registry())).unwrap();
        let pulled = rt
            .block_on(p.pull_to(
                &r,
                &dir,
                &PullOptions::default(),
                Arc::new(move |e| ev.lock().unwrap().push(e)),
            ))
            .unwrap_or_else(|e| panic!("{image}: {e}"));
        let reference = reference_squashfs(tb.registry(), &image, &dir.join("ref"));
        assert_same_tree(
            &image,
            &listing(&pulled.squashfs_path),
            &listing(&reference),
        );
        let mounted = sh(Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"set -e; d=$(mktemp -d); mount -t squashfs -o ro,loop "$1" "$d"; cat "$d/etc/os-release""#)
            .arg("sh")
            .arg(&pulled.squashfs_path));
        assert!(
            mounted.contains("ID=shifter-"),
            "{image}: the kernel mounts it: {mounted}"
        );

        // Published as the design says: image and meta side by side, meta complete.
        assert_eq!(
            pulled.squashfs_path,
            dir.join(format!("{}.squashfs", pulled.id))
        );
        let meta = shifter_api::ImageMeta::from_json(
            &std::fs::read(dir.join(format!("{}.json", pulled.id))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            meta.size,
            std::fs::metadata(&pulled.squashfs_path).unwrap().len()
        );
        assert_eq!(meta.platform.architecture, "amd64");
        assert!(
            !meta.layers.is_empty() && meta.env.iter().any(|e| e.starts_with("PATH=")),
            "{meta:?}"
        );

        let events = events.lock().unwrap();
        let last_pull = events.iter().rev().find_map(|e| match e {
            Progress::Pulling { downloaded, total } => Some((*downloaded, *total)),
            _ => None,
        });
        assert!(
            matches!(last_pull, Some((d, t)) if d == t && t > 0),
            "{image}: download progress {last_pull:?}"
        );
        let last_conv = events.iter().rev().find_map(|e| match e {
            Progress::Converting { converted, total } => Some((*converted, *total)),
            _ => None,
        });
        assert!(
            matches!(last_conv, Some((c, t)) if c == t && t > 0),
            "{image}: conversion progress should end at its announced total: {last_conv:?}"
        );
        // Conversion overlaps the downloads, but its progress is held back until
        // every layer is in: the status never goes from converting back to pulling.
        let first_conv = events
            .iter()
            .position(|e| matches!(e, Progress::Converting { .. }))
            .unwrap();
        assert!(
            !events[first_conv..]
                .iter()
                .any(|e| matches!(e, Progress::Pulling { .. })),
            "{image}: download progress after conversion progress: {events:?}"
        );
        let conv: Vec<(u64, u64)> = events[first_conv..]
            .iter()
            .filter_map(|e| match e {
                Progress::Converting { converted, total } => Some((*converted, *total)),
                _ => None,
            })
            .collect();
        assert!(
            conv.windows(2).all(|w| w[0].0 <= w[1].0),
            "{image}: conversion progress goes backwards: {conv:?}"
        );
    }
}

#[test]
fn layered_image_follows_the_site_rules_and_mounts_with_the_kernel() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let p = puller(&tmp.path().join("cache"), &[tb.registry()], false);
    let img = pull(
        &rt,
        &p,
        &format!("{}/layered:latest", tb.registry()),
        tmp.path(),
        &PullOptions::default(),
    )
    .unwrap();
    let list = listing(&img.squashfs_path).join("\n");
    assert!(
        !list.contains("/dev/testfifo") && !list.contains("/dev/testnull"),
        "devices and fifos are dropped"
    );
    assert!(
        !list.contains("/etc/deleteme") && !list.contains("/data/hard1"),
        "whiteouts applied"
    );
    // The kernel mounts it and sees what a user would: setuid stripped, owners kept,
    // no security.capability xattr anywhere.
    let script = r#"set -e
d=$(mktemp -d)
mount -t squashfs -o ro,loop "$1" "$d"
cat "$d/etc/os-release"
stat -c '%a %u:%g %n' "$d/usr/local/bin/capcheck-suid" "$d/data/owned/secret"
stat -c '%h %n' "$d/data/orig"
getfattr -d -m - "$d/usr/local/bin/capcheck-xattr" 2>&1 || true
ls "$d/opt/olddir"
"#;
    let out = sh(Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&img.squashfs_path));
    assert!(out.contains("ID=shifter-layered"), "{out}");
    assert!(
        out.contains("755 0:0 ") && out.contains("/usr/local/bin/capcheck-suid"),
        "setuid stripped: {out}"
    );
    assert!(out.contains("600 1234:1234 "), "owner kept: {out}");
    assert!(
        out.contains("2 ") && out.contains("/data/orig"),
        "orig and hard2 share an inode: {out}"
    );
    assert!(!out.contains("security.capability"), "no xattrs: {out}");
    assert_eq!(
        out.lines().last(),
        Some("new"),
        "opaque dir holds only the new file: {out}"
    );
    let superblock = sh(Command::new("unsquashfs").arg("-s").arg(&img.squashfs_path));
    assert!(superblock.contains("Xattrs are not stored"), "{superblock}");
}

#[test]
fn second_pull_gives_the_same_id_and_a_byte_identical_squashfs() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let reference = format!("{}/layered:oci", tb.registry());
    let (d1, d2, d3) = (
        tmp.path().join("1"),
        tmp.path().join("2"),
        tmp.path().join("3"),
    );
    for d in [&d1, &d2, &d3] {
        std::fs::create_dir_all(d).unwrap();
    }
    let p = puller(&tmp.path().join("cache"), &[tb.registry()], false);
    let a = pull(&rt, &p, &reference, &d1, &PullOptions::default()).unwrap();
    let b = pull(&rt, &p, &reference, &d2, &PullOptions::default()).unwrap(); // from the cache
    let fresh = puller(&tmp.path().join("cache2"), &[tb.registry()], false);
    let c = pull(&rt, &fresh, &reference, &d3, &PullOptions::default()).unwrap();
    assert_eq!((&a.id, &a.id), (&b.id, &c.id));
    let bytes = |p: &PulledImage| std::fs::read(&p.squashfs_path).unwrap();
    assert!(
        bytes(&a) == bytes(&b) && bytes(&a) == bytes(&c),
        "squashfs differs between pulls"
    );
    let digest = shifter_integration::registry::get_manifest(tb.registry(), "layered", "oci")
        .unwrap()
        .digest_header
        .unwrap();
    assert_eq!(
        format!("sha256:{}", a.id),
        digest,
        "the id is the manifest digest"
    );
}

#[test]
fn platform_is_selected_from_an_oci_index_and_a_docker_manifest_list() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let p = puller(&tmp.path().join("cache"), &[tb.registry()], false);
    for tag in ["latest", "dockerlist"] {
        let reference = format!("{}/multi:{tag}", tb.registry());
        let dir = tmp.path().join(tag);
        std::fs::create_dir_all(&dir).unwrap();
        let amd = pull(&rt, &p, &reference, &dir, &PullOptions::default()).unwrap();
        let arm_opts = PullOptions {
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: None,
            }),
            ..Default::default()
        };
        let arm = pull(&rt, &p, &reference, &dir, &arm_opts).unwrap();
        assert_ne!(amd.id, arm.id);
        assert_eq!(
            (
                amd.meta.platform.architecture.as_str(),
                arm.meta.platform.architecture.as_str()
            ),
            ("amd64", "arm64")
        );
        let os_release = |img: &PulledImage| {
            sh(Command::new("unsquashfs")
                .args(["-cat"])
                .arg(&img.squashfs_path)
                .arg("etc/os-release"))
        };
        assert!(os_release(&arm).contains("shifter-arm64"), "{tag}");
        assert!(!os_release(&amd).contains("shifter-arm64"), "{tag}");
        let s390 = PullOptions {
            platform: Some(Platform {
                os: "linux".into(),
                architecture: "s390x".into(),
                variant: None,
            }),
            ..Default::default()
        };
        let e = pull(&rt, &p, &reference, &dir, &s390).unwrap_err();
        assert!(
            e.to_string().contains("no image for platform linux/s390x")
                && e.to_string().contains("linux/arm64"),
            "{e}"
        );
    }
}

// ---- servers in front of the real registry -------------------------------------

/// Serves `app` on a free loopback port in the background of `rt`.
fn serve(rt: &tokio::runtime::Runtime, app: Router) -> SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Forwards a request to the real registry, passing the manifest headers back.
fn forward(
    upstream: &str,
    req: &Request,
) -> impl std::future::Future<Output = (StatusCode, HeaderMap, Vec<u8>)> + Send {
    // Taken out of the request first: a &Request may not be held across an await.
    let url = format!(
        "http://{upstream}{}",
        req.uri().path_and_query().map_or("", |p| p.as_str())
    );
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .map(|a| a.to_str().unwrap().to_owned());
    forward_url(url, accept)
}

async fn forward_url(url: String, accept: Option<String>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut r = reqwest::Client::new().get(url);
    if let Some(a) = accept {
        r = r.header(header::ACCEPT, a);
    }
    let resp = r.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let mut headers = HeaderMap::new();
    for h in ["content-type", "docker-content-digest"] {
        if let Some(v) = resp.headers().get(h) {
            headers.insert(h, v.to_str().unwrap().parse().unwrap());
        }
    }
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

#[derive(Clone)]
struct Lying {
    upstream: String,
    /// Which lie to tell: "blob" flips a byte of every layer, "manifest" pads the
    /// manifest, "none" tells the truth.
    lie: &'static str,
    /// Blob requests seen.
    blob_gets: Arc<std::sync::atomic::AtomicUsize>,
}

async fn lying(State(s): State<Lying>, req: Request) -> Response {
    let (status, headers, mut body) = forward(&s.upstream, &req).await;
    let path = req.uri().path().to_owned();
    if path.contains("/blobs/") {
        s.blob_gets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    if s.lie == "blob" && path.contains("/blobs/") && body.len() > 1000 {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    if s.lie == "manifest" && path.contains("/manifests/") {
        body.extend_from_slice(b"\n");
    }
    (status, headers, body).into_response()
}

#[test]
fn lying_registry_is_caught_by_digest_verification() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    for lie in ["blob", "manifest"] {
        let addr = serve(
            &rt,
            Router::new().fallback(lying).with_state(Lying {
                upstream: tb.registry().to_owned(),
                lie,
                blob_gets: Default::default(),
            }),
        );
        let tmp = tempfile::tempdir().unwrap();
        let host = addr.to_string();
        let p = puller(&tmp.path().join("cache"), &[&host], false);
        let e = pull(
            &rt,
            &p,
            &format!("{host}/busybox:latest"),
            tmp.path(),
            &PullOptions::default(),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("does not match its digest"), "{lie}: {msg}");
        assert_eq!(e.kind(), shifter_pull::ErrorKind::Rejected, "{lie}");
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "cache")
            .collect();
        assert!(
            leftovers.is_empty(),
            "{lie}: nothing published: {leftovers:?}"
        );
        let cached = std::fs::read_dir(tmp.path().join("cache/blobs/sha256"))
            .unwrap()
            .count();
        assert!(
            lie != "blob" || cached == 0,
            "a corrupt blob never enters the cache"
        );
    }
}

#[test]
fn cached_layers_are_reused_and_a_rotten_cache_entry_is_fetched_again() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = serve(
        &rt,
        Router::new().fallback(lying).with_state(Lying {
            upstream: tb.registry().to_owned(),
            lie: "none",
            blob_gets: Arc::clone(&gets),
        }),
    );
    let host = addr.to_string();
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let p = puller(&cache, &[&host], false);
    let reference = format!("{host}/busybox:latest");
    let pull_counting = |name: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let before = gets.load(std::sync::atomic::Ordering::SeqCst);
        let img = pull(&rt, &p, &reference, &dir, &PullOptions::default()).unwrap();
        (img, gets.load(std::sync::atomic::Ordering::SeqCst) - before)
    };
    let (first, n1) = pull_counting("1");
    assert_eq!(n1, 1 + first.meta.layers.len(), "config and every layer");
    let (second, n2) = pull_counting("2");
    assert_eq!(
        n2, 1,
        "layers come from the cache; only the config is fetched"
    );
    for l in &first.meta.layers {
        std::fs::write(cache.join("blobs/sha256").join(&l[7..]), b"rotten").unwrap();
    }
    let (third, n3) = pull_counting("3");
    assert_eq!(n3, n1, "rotten blobs are fetched again");
    let bytes = |i: &PulledImage| std::fs::read(&i.squashfs_path).unwrap();
    assert!(bytes(&first) == bytes(&second) && bytes(&first) == bytes(&third));
}

#[test]
fn resolve_names_the_image_without_downloading_layers() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = serve(
        &rt,
        Router::new().fallback(lying).with_state(Lying {
            upstream: tb.registry().to_owned(),
            lie: "none",
            blob_gets: Arc::clone(&gets),
        }),
    );
    let host = addr.to_string();
    let tmp = tempfile::tempdir().unwrap();
    let p = puller(&tmp.path().join("cache"), &[&host], false);
    let r = DockerRef::parse(&format!("{host}/layered:latest")).unwrap();
    let resolved = rt.block_on(p.resolve(&r, &PullOptions::default())).unwrap();
    assert_eq!(
        gets.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the config blob"
    );
    assert_eq!(resolved.meta.entrypoint, vec!["/bin/echo", "entrypoint"]);
    assert_eq!(resolved.meta.workdir.as_deref(), Some("/data"));
    let digest = shifter_integration::registry::get_manifest(tb.registry(), "layered", "latest")
        .unwrap()
        .digest_header
        .unwrap();
    assert_eq!(format!("sha256:{}", resolved.id), digest);
}

#[derive(Clone)]
struct Bearer {
    upstream: String,
    token_addr: Arc<Mutex<String>>,
    blob_host: Arc<Mutex<String>>,
    /// Authorization headers seen by the foreign blob host.
    leaked: Arc<Mutex<Vec<String>>>,
    token_requests: Arc<Mutex<Vec<String>>>,
}

async fn bearer_registry(State(s): State<Bearer>, req: Request) -> Response {
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v == "Bearer good-token");
    if !authorized {
        let challenge = format!(
            r#"Bearer realm="http://{}/token",service="test-registry",scope="repository:busybox:pull""#,
            s.token_addr.lock().unwrap()
        );
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            "{}",
        )
            .into_response();
    }
    let path = req.uri().path().to_owned();
    if path.contains("/blobs/") {
        // Blob storage elsewhere, like S3 behind Docker Hub: credentials must not follow.
        let loc = format!("http://{}{path}", s.blob_host.lock().unwrap());
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, loc)],
            "",
        )
            .into_response();
    }
    let (status, headers, body) = forward(&s.upstream, &req).await;
    (status, headers, body).into_response()
}

async fn token_server(State(s): State<Bearer>, req: Request) -> Response {
    s.token_requests
        .lock()
        .unwrap()
        .push(req.uri().query().unwrap_or_default().to_owned());
    // user:secret
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v == "Basic dXNlcjpzZWNyZXQ=");
    if !ok {
        return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"token":"good-token","expires_in":300}"#,
    )
        .into_response()
}

async fn blob_host(State(s): State<Bearer>, req: Request) -> Response {
    if let Some(a) = req.headers().get(header::AUTHORIZATION) {
        s.leaked
            .lock()
            .unwrap()
            .push(a.to_str().unwrap_or("?").to_owned());
    }
    let (status, headers, body) = forward(&s.upstream, &req).await;
    (status, headers, Body::from(body)).into_response()
}

#[test]
fn bearer_token_flow_works_and_redirects_drop_credentials() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let s = Bearer {
        upstream: tb.registry().to_owned(),
        token_addr: Default::default(),
        blob_host: Default::default(),
        leaked: Default::default(),
        token_requests: Default::default(),
    };
    let reg = serve(
        &rt,
        Router::new()
            .fallback(bearer_registry)
            .with_state(s.clone()),
    );
    let tok = serve(
        &rt,
        Router::new().fallback(token_server).with_state(s.clone()),
    );
    let blobs = serve(&rt, Router::new().fallback(blob_host).with_state(s.clone()));
    *s.token_addr.lock().unwrap() = tok.to_string();
    // "localhost" and another port: a different host for the redirect policy.
    *s.blob_host.lock().unwrap() = format!("localhost:{}", blobs.port());
    let host = reg.to_string();
    let reference = format!("{host}/busybox:latest");
    let tmp = tempfile::tempdir().unwrap();
    // The token server and the blob host are on loopback too: the site must
    // vouch for them (internal), or the address policy refuses them.
    let tok_host = tok.to_string();
    let blob_host = format!("localhost:{}", blobs.port());
    let p = puller(
        &tmp.path().join("cache"),
        &[&host, &tok_host, &blob_host],
        false,
    );

    let e = pull(&rt, &p, &reference, tmp.path(), &PullOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("refused the credentials")
            || e.to_string().contains("refused access"),
        "{e}"
    );

    let opts = PullOptions {
        credentials: Some(Credentials {
            username: "user".into(),
            password: "secret".into(),
        }),
        ..Default::default()
    };
    let img = pull(&rt, &p, &reference, tmp.path(), &opts).unwrap();
    assert!(img.size > 0);
    let q = s.token_requests.lock().unwrap().last().cloned().unwrap();
    assert!(
        q.contains("scope=repository%3Abusybox%3Apull") && q.contains("service=test-registry"),
        "{q}"
    );
    assert!(
        s.leaked.lock().unwrap().is_empty(),
        "credentials followed the redirect: {:?}",
        s.leaked.lock().unwrap()
    );
}

/// A second docker-registry over the same storage, read-only, with htpasswd auth.
struct BasicRegistry {
    child: Child,
    addr: String,
}

impl Drop for BasicRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn basic_registry(tb: &Testbed, work: &Path) -> BasicRegistry {
    let htpasswd = work.join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash("wonderland", 4).unwrap()),
    )
    .unwrap();
    extra_registry(
        tb,
        work,
        &format!(
            "auth: {{htpasswd: {{realm: shifter-test, path: {}}}}}\n",
            htpasswd.display()
        ),
        "",
    )
}

/// Another docker-registry serving the test images read-only, with extra config
/// (`auth:` lines, `tls:` settings inside `http:`).
fn extra_registry(tb: &Testbed, work: &Path, top: &str, http: &str) -> BasicRegistry {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = work.join("registry.yml");
    std::fs::write(
        &conf,
        format!(
            "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\n\
             storage: {{filesystem: {{rootdirectory: {}}}, maintenance: {{uploadpurging: {{enabled: false}}, readonly: {{enabled: true}}}}}}\n\
             {top}\
             http: {{addr: 127.0.0.1:{port}{http}}}\n",
            tb.dir.join("registry").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(work.join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&conf)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("docker-registry");
    let reg = BasicRegistry {
        child,
        addr: format!("127.0.0.1:{port}"),
    };
    let up = Testbed::wait_until(Duration::from_secs(15), || {
        std::net::TcpStream::connect(&reg.addr).is_ok()
    });
    assert!(up, "the extra registry did not start: {conf:?}");
    reg
}

/// A throw-away CA and a server certificate for 127.0.0.1 signed by it.
fn test_ca(work: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let script = r#"set -e
cd "$1"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=shifter-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout key.pem -out req.csr -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >ext.cnf
openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 -extfile ext.cnf 2>/dev/null
"#;
    sh(Command::new("sh").args(["-c", script, "sh"]).arg(work));
    (
        work.join("ca.pem"),
        work.join("cert.pem"),
        work.join("key.pem"),
    )
}

#[test]
fn tls_registry_needs_its_ca_or_the_insecure_setting() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(tmp.path());
    let tls = format!(
        ", tls: {{certificate: {}, key: {}}}",
        cert.display(),
        key.display()
    );
    let reg = extra_registry(&tb, tmp.path(), "", &tls);
    let reference = format!("{}/busybox:latest", reg.addr);
    let with = |rc: RegistryConfig| {
        let mut cfg = PullConfig::new(tmp.path().join("cache"));
        cfg.registries.insert(reg.addr.clone(), rc);
        cfg.attempts = 1;
        cfg.timeout = STEP;
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        pull(
            &rt,
            &Puller::new(cfg).unwrap(),
            &reference,
            dir.path(),
            &PullOptions::default(),
        )
    };
    let e = with(RegistryConfig {
        internal: true,
        ..Default::default()
    })
    .unwrap_err();
    // The user is told only that it failed; the log says why.
    assert_eq!(
        e.to_string(),
        format!("registry {} unreachable or refused", reg.addr)
    );
    let detail = match &e {
        shifter_pull::PullError::Registry(r) => r.log_detail().unwrap_or_default(),
        other => panic!("{other:?}"),
    };
    assert!(
        detail.contains("UnknownIssuer") || detail.contains("certificate"),
        "{detail}"
    );
    let ok = with(RegistryConfig {
        ca_file: Some(ca),
        internal: true,
        ..Default::default()
    })
    .unwrap();
    assert!(ok.size > 0);
    with(RegistryConfig {
        insecure: true,
        internal: true,
        ..Default::default()
    })
    .unwrap();
}

#[test]
fn basic_auth_registry_refuses_anonymous_pulls_and_accepts_a_login() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let reg = basic_registry(&tb, tmp.path());
    let p = puller(&tmp.path().join("cache"), &[&reg.addr], false);
    let reference = format!("{}/busybox:latest", reg.addr);
    let e = pull(&rt, &p, &reference, tmp.path(), &PullOptions::default()).unwrap_err();
    assert!(e.to_string().contains("shifterimg login"), "{e}");
    let wrong = PullOptions {
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "nope".into(),
        }),
        ..Default::default()
    };
    let e = pull(&rt, &p, &reference, tmp.path(), &wrong).unwrap_err();
    assert!(e.to_string().contains("credentials were refused"), "{e}");
    let right = PullOptions {
        credentials: Some(Credentials {
            username: "alice".into(),
            password: "wonderland".into(),
        }),
        ..Default::default()
    };
    let img = pull(&rt, &p, &reference, tmp.path(), &right).unwrap();
    let plain =
        shifter_integration::registry::get_manifest(tb.registry(), "busybox", "latest").unwrap();
    assert_eq!(
        Some(format!("sha256:{}", img.id)),
        plain.digest_header,
        "same image as via the open registry"
    );
}
