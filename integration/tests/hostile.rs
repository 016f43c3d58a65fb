//! End-to-end: hostile images (issue 7) pushed to the cluster's registry by
//! `integration/images/hostile.py`, pulled through a real gateway with
//! `shifterimg pull` as the test user. Each one ends either in FAILURE with a
//! message a user can act on and nothing new in the image directory, or in a
//! READY image whose hostile parts are gone (checked in the published squashfs
//! and by running it with `srun --image`).
//!
//! Rejections run against a gateway this file starts (own image dir, low
//! `[limits]` so the bombs stay small); the neutralised image goes through the
//! cluster's gateway so Slurm can run it. A lying registry (an axum proxy in
//! front of the real one) sits behind a second test-owned gateway.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use shifter_integration::{report, uid_of, Gateway, GatewayOptions, Run, Testbed};

const T: Duration = Duration::from_secs(20);
const PULL: Duration = Duration::from_secs(90);
const MAX_IMAGE_BYTES: u64 = 4 << 20;
const MAX_IMAGE_ENTRIES: u64 = 1000;

/// Builds and pushes the hostile images once per test process.
fn pushed(tb: &Testbed) -> &'static BTreeMap<String, String> {
    static PUSHED: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    PUSHED.get_or_init(|| {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = tb.dir.join("hostile-oci");
        let _ = std::fs::remove_dir_all(&out);
        let capcheck = tb.dir.join("build/capcheck");
        let r = tb.run_root(
            &[
                "python3",
                here.join("images/hostile.py").to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--capcheck",
                capcheck.to_str().unwrap(),
                "--push",
                tb.registry(),
            ],
            Duration::from_secs(120),
        );
        r.assert_ok();
        serde_json::from_str(r.stdout.trim()).expect("hostile.py prints name -> digest")
    })
}

/// Every name in `dir`, hidden ones (staging, temp files) included.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A gateway owned by one test (see [`Gateway`]) pulling from `registry`, with
/// the small image caps the hostile layers are measured against.
fn start_gw(tb: &Testbed, name: &str, registry: &str) -> Gateway {
    start_gw_with(tb, name, registry, "")
}

/// `extra_limits`: more lines for the `[limits]` table.
fn start_gw_with(tb: &Testbed, name: &str, registry: &str, extra_limits: &str) -> Gateway {
    let opts = GatewayOptions {
        registry: Some(registry.to_owned()),
        limits: format!(
            "max_image_bytes = {MAX_IMAGE_BYTES}\nmax_image_entries = {MAX_IMAGE_ENTRIES}\n{extra_limits}"
        ),
        ..GatewayOptions::default()
    };
    Gateway::start(tb, &format!("hostile-{name}"), opts)
}

/// `shifterimg pull` as the test user against `gw`.
fn pull(tb: &Testbed, gw: &Gateway, reference: &str) -> Run {
    shifterimg(tb, &["--gateway", &gw.url(""), "pull", reference])
}

fn shifterimg(tb: &Testbed, args: &[&str]) -> Run {
    tb.shifterimg_within(tb.user(), args, PULL)
}

fn hostile_ref(registry: &str, name: &str) -> String {
    format!("docker:{registry}/hostile/{name}:latest")
}

/// Pulls `reference` and checks the user sees a FAILURE carrying every one of
/// `expect`, and that the image directory is as empty as before.
#[track_caller]
fn assert_refused(tb: &Testbed, gw: &Gateway, reference: &str, expect: &[&str]) {
    let r = pull(tb, gw, reference);
    r.assert_failed();
    let said = format!("{}{}", r.stdout, r.stderr);
    assert!(
        said.contains("FAILURE"),
        "{reference}: the user sees the FAILURE status: {r}"
    );
    for e in expect {
        assert!(
            said.contains(e),
            "{reference}: the message names {e:?}: {r}\n--- gateway log ---\n{}",
            gw.log()
        );
    }
    assert_eq!(
        names_in(&gw.images()),
        Vec::<String>::new(),
        "{reference}: nothing is published or left behind"
    );
}

#[test]
fn hostile_layers_end_in_a_failure_naming_the_problem_and_publish_nothing() {
    let Some(tb) = Testbed::get() else { return };
    let gw = start_gw(&tb, "layers", tb.registry());
    let cases: &[(&str, &[&str])] = &[
        (
            "dotdot",
            &["entry \"../../escape\" has a '..' component; the image is refused"],
        ),
        (
            "absolute",
            &["entry \"/etc/evil\" has an absolute path; the image is refused"],
        ),
        // Both of its layers hold one ("etc/.wh..." and ".wh..."): layers are read
        // newest first, so that is the one named.
        (
            "whiteout-dots",
            &["\".wh...\" has a '..' component", "refused"],
        ),
        (
            "symlink-escape",
            &["\"etcl\", which is a symlink", "refused"],
        ),
        (
            "symlink-relative",
            &["\"up\", which is a symlink", "refused"],
        ),
        (
            "hardlink-out",
            &["stolen", "../../../etc/shadow", "refused"],
        ),
        ("hardlink-abs", &["stolen", "/etc/shadow", "refused"]),
        ("bomb", &["more than 4194304 bytes", "decompression bomb"]),
        (
            "sparse-bomb",
            &["more than 4194304 bytes", "decompression bomb"],
        ),
        ("entries", &["more than 1000 entries"]),
        ("truncated-gzip", &["corrupt or truncated"]),
        ("truncated-zstd", &["corrupt or truncated"]),
        ("bad-checksum", &["corrupt or truncated"]),
        (
            "no-platform",
            &["no image for platform linux/amd64", "linux/arm64"],
        ),
    ];
    let digests = pushed(&tb);
    let mut tried = Vec::new();
    let mut left_behind = 0;
    for (name, expect) in cases {
        if !digests.contains_key(*name) {
            test_skip::skip(
                &format!("hostile case {name}"),
                "hostile.py did not build it (is the zstd CLI installed?)",
            );
            continue;
        }
        assert_refused(&tb, &gw, &hostile_ref(tb.registry(), name), expect);
        left_behind += names_in(&gw.images()).len() as u64;
        tried.push(*name);
    }
    let n = tried.len() as u64;
    report::figure(
        "hostile",
        "hostile layers and indexes refused",
        n,
        n,
        left_behind,
    );
    // The gateway logged every refusal and still serves.
    let log = gw.log();
    for name in tried {
        let failed = log
            .lines()
            .any(|l| l.contains("pull failed") && l.contains(&format!("hostile/{name}:")));
        assert!(failed, "{name}: the refusal is in the gateway log:\n{log}");
    }
    let r = pull(
        &tb,
        &gw,
        &format!("docker:{}/busybox:latest", tb.registry()),
    );
    r.assert_ok();
}

/// `unsquashfs -lln` of a published image, as raw bytes (names may not be UTF-8).
fn listing_bytes(sqfs: &Path) -> Vec<u8> {
    let out = Command::new("unsquashfs")
        .arg("-lln")
        .arg(sqfs)
        .output()
        .unwrap();
    assert!(out.status.success(), "unsquashfs -lln {}", sqfs.display());
    out.stdout
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn odd_names_are_kept_exactly_and_a_hardlink_through_a_symlink_is_dropped() {
    let Some(tb) = Testbed::get() else { return };
    let digests = pushed(&tb);
    let gw = start_gw(&tb, "names", tb.registry());
    for name in ["weird-names", "long-path", "hardlink-via-symlink"] {
        pull(&tb, &gw, &hostile_ref(tb.registry(), name)).assert_ok();
        let id = digests[name].trim_start_matches("sha256:");
        let sqfs = gw.images().join(format!("{id}.squashfs"));
        assert!(
            gw.images().join(format!("{id}.json")).exists(),
            "{name}: meta published"
        );
        let list = listing_bytes(&sqfs);
        match name {
            "weird-names" => {
                assert!(contains(&list, b"/weird/new\nline"), "newline kept");
                assert!(contains(&list, b"/weird/bad-\xff-utf8"), "raw byte kept");
            }
            "hardlink-via-symlink" => {
                // A squashfs hardlink can only name an inode of the image, so a
                // link to the host's /etc/shadow cannot be stored: it is dropped.
                assert!(!contains(&list, b"stolen"), "hardlink dropped");
                assert!(contains(&list, b"squashfs-root/etcl -> /etc\n"));
                let log = gw.log();
                assert!(
                    log.contains("dropping hardlink") && log.contains("target=etcl/shadow"),
                    "the drop is logged:\n{log}"
                );
            }
            _ => {
                let long = format!("{}/{}", vec!["d".repeat(254); 16].join("/"), "f".repeat(16));
                assert_eq!(long.len(), 4096);
                assert!(contains(&list, long.as_bytes()), "4096-byte path kept");
            }
        }
    }
    // Only finished images: no staging or temp file remains.
    let mut left = names_in(&gw.images());
    left.retain(|n| !n.ends_with(".squashfs") && !n.ends_with(".json"));
    report::figure(
        "hostile",
        "odd names kept, hardlink via symlink dropped",
        3,
        3,
        left.len() as u64,
    );
    assert_eq!(left, Vec::<String>::new());
}

#[test]
fn devices_setuid_and_xattrs_are_gone_and_give_the_user_nothing_under_srun() {
    let Some(tb) = Testbed::get() else { return };
    let digests = pushed(&tb);
    // The cluster's own gateway, so Slurm's nodes find the image.
    let image = hostile_ref(tb.registry(), "neutral");
    shifterimg(&tb, &["pull", &image]).assert_ok();
    let id = digests["neutral"].trim_start_matches("sha256:");
    let sqfs = Path::new(tb.var("SHIFTER_IMAGE_DIR")).join(format!("{id}.squashfs"));
    let list = String::from_utf8(listing_bytes(&sqfs)).unwrap();
    let entry = |path: &str| {
        list.lines()
            .find(|l| l.ends_with(&format!("squashfs-root{path}")))
            .map(str::to_owned)
    };
    for l in list.lines().filter(|l| l.contains("squashfs-root/")) {
        assert!(
            !matches!(l.as_bytes()[0], b'c' | b'b' | b'p' | b's'),
            "no device, fifo or socket survives: {l}"
        );
        let mode = l.split_whitespace().next().unwrap();
        assert!(
            !mode.contains(['s', 'S']),
            "no setuid/setgid bit survives: {l}"
        );
    }
    for p in ["/usr/local/bin/suid-root", "/usr/local/bin/sgid-root"] {
        let l = entry(p).unwrap_or_else(|| panic!("{p} kept:\n{list}"));
        assert!(
            l.starts_with("-rwxr-xr-x 0/0 "),
            "{p} stripped to 0755: {l}"
        );
    }
    assert!(entry("/usr/local/bin/cap-xattr").is_some());
    assert!(entry("/data/orig").is_none(), "whited-out file gone");
    assert!(
        entry("/data/link-to-whited").is_none(),
        "a hardlink to a whited-out file is dropped"
    );
    assert!(
        entry("/data/to-be-whited").is_some(),
        "a hardlink made before the whiteout keeps the content"
    );
    let sb = Command::new("unsquashfs")
        .arg("-s")
        .arg(&sqfs)
        .output()
        .unwrap();
    let sb = String::from_utf8_lossy(&sb.stdout);
    assert!(
        sb.contains("Xattrs are not stored") || sb.contains("Number of xattr ids 0"),
        "no xattr stored at all:\n{sb}"
    );

    // Each drop is logged by the gateway that converted it (the cluster's, on
    // its first pull of this deterministic image).
    let log = std::fs::read_to_string(tb.dir.join("log/imagegw.log")).unwrap_or_default();
    for drop in [
        "path=dev/mem kind=Char",
        "path=dev/hostile-blk kind=Block",
        "path=dev/hostile-fifo kind=Fifo",
        "dropping hardlink whose target is not a file of the image path=data/link-to-whited",
    ] {
        assert!(log.contains(drop), "the gateway logged {drop:?}");
    }

    let uid = uid_of(tb.user()).to_string();
    for bin in ["suid-root", "sgid-root", "cap-xattr"] {
        let r = tb.run_as(
            tb.user(),
            &[
                "srun",
                "-N1",
                "-n1",
                &format!("--image={image}"),
                &format!("/usr/local/bin/{bin}"),
            ],
            Duration::from_secs(60),
        );
        r.assert_ok();
        let o = &r.stdout;
        assert!(
            o.contains(&format!("uid={uid} euid={uid} suid={uid}")),
            "{bin}: euid is the user's: {r}"
        );
        assert!(!o.contains("egid=0"), "{bin}: egid is not root's: {r}");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert!(
                o.contains(&format!("{cap}:\t0000000000000000")),
                "{bin}: {cap} empty: {r}"
            );
        }
        assert!(o.contains("NoNewPrivs:\t1"), "{bin}: {r}");
        assert!(!o.contains("setuid0=ok"), "{bin}: setuid(0) fails: {r}");
    }
    let r = tb.run_as(
        tb.user(),
        &[
            "srun",
            "-N1",
            "-n1",
            &format!("--image={image}"),
            "ls",
            "-ln",
            "/usr/local/bin/suid-root",
        ],
        Duration::from_secs(60),
    );
    r.assert_ok();
    assert!(
        r.stdout.starts_with("-rwxr-xr-x "),
        "no s bit inside the container: {r}"
    );
    // devices, fifo, setuid, setgid, capability xattr, other xattrs
    report::figure(
        "hostile",
        "devices, setuid bits, xattrs neutralised under srun",
        6,
        6,
        0,
    );
}

// ---- a registry that lies ----------------------------------------------------

/// A proxy in front of the real registry. The first path component after `/v2/`
/// names the lie: `blob` flips a byte of every layer, `manifest` appends a byte to
/// manifests (the digest header keeps the true digest), `missing` answers 404 for
/// layers, `truth` forwards faithfully.
async fn lying(State(upstream): State<String>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let Some((lie, rest)) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.split_once('/'))
        .filter(|(_, rest)| !rest.is_empty())
    else {
        // The /v2/ ping.
        return (StatusCode::OK, "{}").into_response();
    };
    let mut r = reqwest::Client::new()
        .request(req.method().clone(), format!("http://{upstream}/v2/{rest}"));
    if let Some(a) = req.headers().get(header::ACCEPT) {
        r = r.header(header::ACCEPT, a.to_str().unwrap());
    }
    let resp = r.send().await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let mut headers = HeaderMap::new();
    for h in ["content-type", "docker-content-digest"] {
        if let Some(v) = resp.headers().get(h) {
            headers.insert(h, v.clone());
        }
    }
    let mut body = resp.bytes().await.unwrap().to_vec();
    let layer = rest.contains("/blobs/") && body.len() > 1000;
    match lie {
        "blob" if layer => {
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
        }
        "manifest" if rest.contains("/manifests/") => body.push(b'\n'),
        "missing" if layer => {
            let e = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
            return (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/json")],
                e,
            )
                .into_response();
        }
        _ => {}
    }
    (status, headers, body).into_response()
}

fn serve_lying_registry(rt: &tokio::runtime::Runtime, upstream: &str) -> SocketAddr {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .fallback(lying)
        .with_state(upstream.to_owned());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[test]
fn a_lying_registry_ends_in_a_failure_and_publishes_nothing() {
    let Some(tb) = Testbed::get() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let proxy = serve_lying_registry(&rt, tb.registry()).to_string();
    // Its own cache: a blob verified earlier must not hide the lie.
    let gw = start_gw(&tb, "lying", &proxy);
    let cases: &[(&str, &[&str])] = &[
        ("blob", &["does not match its digest"]),
        ("manifest", &["does not match its digest"]),
        ("missing", &["not found in registry"]),
    ];
    for (lie, expect) in cases {
        assert_refused(
            &tb,
            &gw,
            &format!("docker:{proxy}/{lie}/busybox:latest"),
            expect,
        );
    }
    // The same image through the same proxy telling the truth is fine, so the
    // failures above were the lies.
    pull(&tb, &gw, &format!("docker:{proxy}/truth/busybox:latest")).assert_ok();
    let published = names_in(&gw.images()).len() as u64;
    report::figure(
        "hostile",
        "lying registry refused",
        3,
        3,
        published.abs_diff(2),
    );
    assert_eq!(published, 2, "one image and its meta");
}

// ---- a custom import carrying setuid-root, file capabilities and devices ------

/// struct vfs_cap_data revision 2 with the effective flag: CAP_SETUID,
/// CAP_DAC_OVERRIDE and CAP_SYS_ADMIN permitted (as in mkoci.py).
fn vfs_cap_v2_hex() -> String {
    let caps: u64 = (1 << 7) | (1 << 1) | (1 << 21);
    let words = [0x0200_0001u32, caps as u32, 0, (caps >> 32) as u32, 0];
    words.iter().map(|w| hex::encode(w.to_le_bytes())).collect()
}

#[test]
fn an_imported_squashfs_with_setuid_caps_and_devices_gives_the_user_nothing() {
    let Some(tb) = Testbed::get() else { return };
    let dir = tb
        .workdir()
        .join(format!("hostile-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("root");
    for d in ["bin", "usr/local/bin", "data", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let capcheck = tb.dir.join("build/capcheck");
    let script = format!(
        r#"set -e
cd {root}
cp /bin/busybox bin/busybox
for a in sh ls head cat id; do ln -s busybox bin/$a; done
echo 'ID=hostile-import' > etc/os-release
install -o 0 -g 0 -m 4755 {capcheck} usr/local/bin/suid-root
install -o 0 -g 0 -m 0755 {capcheck} usr/local/bin/cap-xattr
python3 -c 'import os,sys; os.setxattr(sys.argv[1], "security.capability", bytes.fromhex(sys.argv[2]))' usr/local/bin/cap-xattr {cap}
mknod -m 0666 data/mem c 1 1
mknod -m 0666 data/null c 1 3
mksquashfs {root} {dir}/site.sqfs -noappend -quiet -no-progress
chown {user} {dir} {dir}/site.sqfs
unsquashfs -lls {dir}/site.sqfs
unsquashfs -s {dir}/site.sqfs | grep -i xattr
"#,
        root = root.display(),
        dir = dir.display(),
        capcheck = capcheck.display(),
        cap = vfs_cap_v2_hex(),
        user = tb.user(),
    );
    let mk = tb.run_root(&["sh", "-c", &script], T);
    mk.assert_ok();
    // The file really carries what the test is about.
    assert!(mk.stdout.contains("Number of xattr ids 1"), "{mk}");
    assert!(mk.stdout.contains("-rwsr-xr-x root/root"), "{mk}");
    assert!(mk.stdout.contains("crw-rw-rw- root/root"), "{mk}");

    let name = format!("hostile-import-{}", std::process::id());
    let sqfs = dir.join("site.sqfs");
    let imported = shifterimg(&tb, &["import", sqfs.to_str().unwrap(), &name]);
    imported.assert_ok();
    let image = format!("--image=custom:{name}");
    let srun = |args: &[&str]| {
        let mut all = vec!["srun", "-N1", "-n1", image.as_str()];
        all.extend_from_slice(args);
        tb.run_as(tb.user(), &all, Duration::from_secs(60))
    };
    let uid = uid_of(tb.user()).to_string();
    for bin in ["suid-root", "cap-xattr"] {
        let r = srun(&[&format!("/usr/local/bin/{bin}")]);
        r.assert_ok();
        let o = &r.stdout;
        assert!(
            o.contains(&format!("uid={uid} euid={uid} suid={uid}")),
            "{bin}: euid is the user's: {r}"
        );
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert!(
                o.contains(&format!("{cap}:\t0000000000000000")),
                "{bin}: {cap} empty: {r}"
            );
        }
        assert!(!o.contains("setuid0=ok"), "{bin}: setuid(0) fails: {r}");
    }
    // The nodes are there, mode 0666, and still unusable: the image is mounted nodev.
    let r = srun(&[
        "sh",
        "-c",
        "ls -ln /data /usr/local/bin/suid-root; for d in mem null; do head -c1 /data/$d >/dev/null && echo $d=open || echo $d=refused; done",
    ]);
    r.assert_ok();
    // Unlike a pull, an import keeps the bit: the runtime alone makes it harmless.
    assert!(
        r.stdout.contains("-rwsr-xr-x    1 0        0"),
        "the setuid bit is really there: {r}"
    );
    assert!(
        r.stdout.contains("crw-rw-rw-"),
        "devices kept in the image: {r}"
    );
    assert!(
        r.stdout.contains("mem=refused") && r.stdout.contains("null=refused"),
        "devices unusable: {r}"
    );
    report::figure(
        "hostile",
        "imported setuid, caps, devices powerless",
        1,
        1,
        0,
    );
    let _ = std::fs::remove_dir_all(&dir);
    // An admin's expire removes it again, so reruns do not pile up images.
    let bin = tb.bin_dir().join("shifterimg");
    let custom = format!("custom:{name}");
    let cfg = tb.var("SHIFTER_CONFIG");
    tb.run_root(
        &[bin.to_str().unwrap(), "--config", cfg, "expire", &custom],
        T,
    )
    .assert_ok();
}

// ---- crafted squashfs files given to the runtime ------------------------------

/// Kernel log lines that mean the kernel itself went wrong, not the image.
fn kernel_trouble() -> Vec<String> {
    let out = Command::new("dmesg").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            ["Oops", "BUG:", "general protection", "Call Trace"]
                .iter()
                .any(|k| l.contains(k))
        })
        .map(str::to_owned)
        .collect()
}

/// Builds a small valid squashfs as root, owned by the test user, and returns its path.
fn site_squashfs(tb: &Testbed, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let script = format!(
        r#"set -e
mkdir -p {root}/bin {root}/etc {root}/data
cp /bin/busybox {root}/bin/busybox
ln -s busybox {root}/bin/sh; ln -s busybox {root}/bin/ls; ln -s busybox {root}/bin/cat
for i in $(seq 1 200); do echo "file $i" > {root}/data/f$i; done
mksquashfs {root} {dir}/good.sqfs -noappend -quiet -no-progress
"#,
        root = root.display(),
        dir = dir.display(),
    );
    tb.run_root(&["sh", "-c", &script], T).assert_ok();
    dir.join("good.sqfs")
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

#[test]
fn crafted_squashfs_files_are_refused_or_fail_cleanly_without_kernel_trouble() {
    let Some(tb) = Testbed::get() else { return };
    let before = kernel_trouble();
    let dir = tb
        .workdir()
        .join(format!("hostile-crafted-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(site_squashfs(&tb, &dir)).unwrap();
    let inode_table = u64_at(&good, 64) as usize;
    let dir_table = u64_at(&good, 72) as usize;

    let mut bad_magic = good.clone();
    bad_magic[0..4].copy_from_slice(b"sqsh");
    // The root inode reference (superblock offset 32) points 4 GiB past the inode table.
    let mut root_out_of_range = good.clone();
    root_out_of_range[32..40].copy_from_slice(&(0xffff_ffffu64 << 16).to_le_bytes());
    // Garbage over the inode and directory tables: the superblock still checks out.
    let mut garbled = good.clone();
    for b in &mut garbled[inode_table + 2..dir_table] {
        *b = 0xa5;
    }
    // Garbage over the first data blocks (busybox's): the filesystem mounts, reads fail.
    let mut garbled_data = good.clone();
    for b in &mut garbled_data[96..96 + (64 << 10)] {
        *b = 0xa5;
    }
    let bin = tb.bin_dir().join("shifterimg");
    let cfg = tb.var("SHIFTER_CONFIG");
    let (mut imported, mut ids) = (Vec::new(), Vec::new());
    for (name, bytes) in [
        ("bad-magic", &bad_magic),
        ("root-out-of-range", &root_out_of_range),
        ("garbled-tables", &garbled),
        ("garbled-data", &garbled_data),
    ] {
        let path = dir.join(format!("{name}.sqfs"));
        std::fs::write(&path, bytes).unwrap();
        tb.run_root(&["chown", "-R", tb.user(), dir.to_str().unwrap()], T)
            .assert_ok();
        let tag = format!("hostile-{name}-{}", std::process::id());
        let r = shifterimg(&tb, &["import", path.to_str().unwrap(), &tag]);
        if name == "bad-magic" {
            r.assert_failed();
            assert!(
                r.stderr.contains("not a valid squashfs image (bad magic)"),
                "{name}: {r}"
            );
            continue;
        }
        // What the gateway cannot see without mounting reaches the runtime,
        // which must fail the step with a message and leave the node usable.
        r.assert_ok();
        imported.push(format!("custom:{tag}"));
        ids.push(r.stdout.trim().to_owned());
        let run = tb.run_as(
            tb.user(),
            &[
                "srun",
                "-N1",
                "-n1",
                &format!("--image=custom:{tag}"),
                "cat",
                "/data/f1",
            ],
            Duration::from_secs(60),
        );
        run.assert_failed();
        assert!(!run.stdout.contains("file 1"), "{name}: {run}");
        if name == "garbled-data" {
            assert!(run.stderr.contains("Input/output error"), "{name}: {run}");
            continue;
        }
        assert!(
            run.stderr.contains("could not be mounted")
                && run
                    .stderr
                    .contains("not a valid squashfs image; re-pull or re-import it"),
            "{name}: the user is told why and what to do: {run}"
        );
    }
    assert!(tb.wait_queue_empty(T), "jobs still queued");
    let image_dir = Path::new(tb.var("SHIFTER_IMAGE_DIR"));
    let leaked: Vec<String> = Testbed::loop_devices_backed_by(image_dir)
        .into_iter()
        .filter(|l| ids.iter().any(|id| l.contains(id.as_str())))
        .collect();
    assert_eq!(
        leaked,
        Vec::<String>::new(),
        "no loop device left on a crafted image"
    );
    // The node still runs a good image (pulled here: this test must not rely on
    // another one having pulled it).
    let good = tb.pulled("busybox:latest");
    let ok = tb.run_as(
        tb.user(),
        &["srun", "-N1", "-n1", &format!("--image={good}"), "true"],
        Duration::from_secs(60),
    );
    ok.assert_ok();
    let trouble = kernel_trouble();
    let lost = (leaked.len() + trouble.len().saturating_sub(before.len())) as u64;
    report::figure(
        "hostile",
        "crafted squashfs refused or failed cleanly",
        4,
        4,
        lost,
    );
    assert_eq!(trouble, before, "no oops or BUG in the kernel log");
    for image in &imported {
        tb.run_root(
            &[bin.to_str().unwrap(), "--config", cfg, "expire", image],
            T,
        )
        .assert_ok();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A registry that stalls mid-blob: a raw HTTP/1.1 proxy (hyper would not let a
/// handler stop half way through a body it announced) that forwards everything to
/// the real registry but, for the first `stalls` requests of each blob, sends only
/// the first half and then goes quiet with the connection open. It counts the
/// requests per blob, so a test sees every attempt the gateway made.
#[derive(Clone)]
struct StallingRegistry {
    upstream: String,
    stalls: usize,
    requests: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl StallingRegistry {
    /// Serves on a loopback port of `rt`; returns its `host:port`.
    fn serve(rt: &tokio::runtime::Runtime, upstream: &str, stalls: usize) -> (String, Self) {
        let me = StallingRegistry {
            upstream: upstream.to_owned(),
            stalls,
            requests: Arc::default(),
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let served = me.clone();
        rt.spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(served.clone().connection(sock));
            }
        });
        (addr, me)
    }

    /// GET requests per blob path.
    fn blob_requests(&self) -> BTreeMap<String, usize> {
        self.requests.lock().unwrap().clone()
    }

    async fn connection(self, mut sock: tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let mut first = head.lines().next().unwrap_or("").split_whitespace();
        let (method, path) = (first.next().unwrap_or("GET"), first.next().unwrap_or("/"));
        let accept = head.lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("accept"))
                .map(|(_, v)| v.trim().to_owned())
        });
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let url = format!("http://{}{path}", self.upstream);
        let mut r = reqwest::Client::new().request(method.clone(), url);
        if let Some(a) = accept {
            r = r.header(header::ACCEPT, a);
        }
        let resp = r.send().await.unwrap();
        let mut out = format!("HTTP/1.1 {}\r\nConnection: close\r\n", resp.status());
        for h in ["content-type", "docker-content-digest", "www-authenticate"] {
            if let Some(v) = resp.headers().get(h) {
                out.push_str(&format!("{h}: {}\r\n", v.to_str().unwrap()));
            }
        }
        let announced = resp.content_length();
        let body = resp.bytes().await.unwrap();
        let len = if method == reqwest::Method::HEAD {
            announced.unwrap_or(0)
        } else {
            body.len() as u64
        };
        out.push_str(&format!("Content-Length: {len}\r\n\r\n"));
        let _ = sock.write_all(out.as_bytes()).await;
        let stall = if path.contains("/blobs/") && method == reqwest::Method::GET {
            let mut seen = self.requests.lock().unwrap();
            let n = seen.entry(path.to_owned()).or_default();
            *n += 1;
            *n <= self.stalls && body.len() > 1000
        } else {
            false
        };
        if stall {
            let _ = sock.write_all(&body[..body.len() / 2]).await;
            let _ = sock.flush().await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        } else {
            let _ = sock.write_all(&body).await;
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Seconds of silence after which the gateway gives up one request.
const STALL_SECS: u64 = 2;
/// The gateway's attempts per request (shifter-pull's default).
const ATTEMPTS: usize = 4;

#[test]
fn a_registry_that_stalls_mid_blob_is_retried_then_fails_clearly_and_publishes_nothing() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let (proxy, registry) = StallingRegistry::serve(&rt, tb.registry(), usize::MAX);
    let limits = format!("stall_timeout_secs = {STALL_SECS}\npull_timeout_secs = 120");
    let gw = start_gw_with(&tb, "stall", &proxy, &limits);
    let started = std::time::Instant::now();
    assert_refused(
        &tb,
        &gw,
        &format!("docker:{proxy}/busybox:latest"),
        &[
            "stopped arriving",
            &format!("sent nothing for {STALL_SECS} s, {ATTEMPTS} times in a row"),
        ],
    );
    let took = started.elapsed();
    let stalled: Vec<_> = registry
        .blob_requests()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        stalled.iter().any(|(_, n)| *n == ATTEMPTS),
        "one blob was asked for once per attempt, each cut off after {STALL_SECS} s: {stalled:?}"
    );
    // Four silences of 2 s and the backoff between them (0.25 + 0.5 + 1 s), far
    // below the 120 s pull timeout.
    assert!(
        took >= Duration::from_secs(ATTEMPTS as u64 * STALL_SECS) && took < Duration::from_secs(60),
        "the pull failed after {took:?}"
    );
    eprintln!("(hostile: stalled blobs requested {stalled:?}; failed after {took:.1?})");
    let attempts = stalled.iter().map(|(_, n)| *n as u64).max().unwrap_or(0);
    report::figure(
        "hostile",
        "stalled blob: attempts, then FAILURE",
        attempts,
        attempts,
        gw.files().len() as u64,
    );
}

#[test]
fn a_registry_that_stalls_once_per_blob_is_retried_and_the_pull_succeeds() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let (proxy, registry) = StallingRegistry::serve(&rt, tb.registry(), 1);
    let limits = format!("stall_timeout_secs = {STALL_SECS}\npull_timeout_secs = 120");
    let gw = start_gw_with(&tb, "stall-once", &proxy, &limits);
    let r = pull(&tb, &gw, &format!("docker:{proxy}/busybox:latest"));
    assert!(
        r.success() && r.stdout.contains("READY"),
        "{r}\n{}",
        gw.log_tail()
    );
    let requests = registry.blob_requests();
    assert!(
        requests.values().any(|n| *n == 2),
        "a stalled blob was fetched again: {requests:?}"
    );
    assert_eq!(gw.files().len(), 2, "one image and its meta");
    report::figure("hostile", "blob stalled once: retried, READY", 1, 1, 0);
}

// ---- no SSRF: a pull cannot reach or probe the gateway's own network ---------

/// A listening local service that is not a registry and must never be asked:
/// it counts the requests it gets and answers with a secret.
fn internal_service(rt: &tokio::runtime::Runtime) -> (String, Arc<Mutex<usize>>) {
    let hits = Arc::new(Mutex::new(0));
    let seen = Arc::clone(&hits);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let app = Router::new().fallback(move || {
        *seen.lock().unwrap() += 1;
        async { "internal secret: redis_version:7.2.4" }
    });
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

/// A loopback port nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    addr
}

/// `docker/<reference>` percent-encoded for a gateway API path.
fn docker_path(reference: &str) -> String {
    let enc: String = reference
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("docker/{enc}")
}

/// Pulls `reference` through `gw` as the test user until final; it must fail.
/// Returns the status message.
#[track_caller]
fn failed_pull_message(tb: &Testbed, gw: &Gateway, reference: &str) -> String {
    let rec = gw.pull_until_final(tb.user(), &docker_path(reference), None);
    assert_eq!(rec["status"], "FAILURE", "{reference}: {rec}");
    rec["status_message"].as_str().unwrap().to_owned()
}

#[test]
fn a_pull_naming_an_unconfigured_local_port_is_refused_alike_whether_it_is_open_or_closed() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let (secret, hits) = internal_service(&rt);
    let gw = start_gw(&tb, "ssrf-direct", tb.registry());
    // Open: a service of ours and the gateway's own API; closed: nothing there.
    let own_api = format!("127.0.0.1:{}", gw.port);
    let mut said = Vec::new();
    for target in [secret.clone(), own_api, closed_port()] {
        let msg = failed_pull_message(&tb, &gw, &format!("{target}/x:latest"));
        assert!(
            !msg.contains("secret") && !msg.contains("refused (") && !msg.contains("connect"),
            "{target}: nothing of the target is shown: {msg}"
        );
        assert!(msg.contains("not one this site pulls from"), "{msg}");
        said.push(msg.replace(&target, "TARGET"));
    }
    eprintln!("(hostile: unconfigured local registry: {:?})", said[0]);
    assert!(
        said.windows(2).all(|w| w[0] == w[1]),
        "one message for open and closed ports: {said:#?}"
    );
    assert_eq!(
        *hits.lock().unwrap(),
        0,
        "the local service was never asked"
    );
    assert_eq!(gw.files(), Vec::<String>::new());
    report::figure("hostile", "unconfigured local registry refused", 3, 3, 0);
}

/// A registry (allowed, `internal = true` like the cluster's) whose every
/// request is redirected: `/v2/<name>/…` goes to `targets[name]`.
fn redirecting_registry(rt: &tokio::runtime::Runtime, targets: BTreeMap<String, String>) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let targets = Arc::new(targets);
    let app = Router::new().fallback(move |req: Request| {
        let targets = Arc::clone(&targets);
        async move {
            let path = req.uri().path().to_owned();
            let name = path
                .strip_prefix("/v2/")
                .and_then(|p| p.split('/').next())
                .unwrap_or_default();
            match targets.get(name) {
                Some(to) => axum::response::Redirect::temporary(&format!("http://{to}{path}"))
                    .into_response(),
                None => (StatusCode::OK, "{}").into_response(),
            }
        }
    });
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[test]
fn a_registry_redirecting_to_an_internal_service_is_refused_alike_for_open_and_closed_ports() {
    let Some(tb) = Testbed::get() else { return };
    let rt = runtime();
    let (secret, hits) = internal_service(&rt);
    let closed = closed_port();
    let targets: BTreeMap<String, String> = [
        ("open".to_owned(), secret.clone()),
        ("closed".to_owned(), closed.clone()),
        // The registry's own host on another port is just as internal.
        ("cluster".to_owned(), tb.registry().to_owned()),
    ]
    .into();
    let hostile = redirecting_registry(&rt, targets);
    let gw = start_gw(&tb, "ssrf-redirect", &hostile);
    let mut said = Vec::new();
    for name in ["open", "closed", "cluster"] {
        let msg = failed_pull_message(&tb, &gw, &format!("{hostile}/{name}/x:latest"));
        for leak in ["secret", "redis", &secret, &closed, tb.registry()] {
            assert!(!msg.contains(leak), "{name}: {leak:?} is not shown: {msg}");
        }
        assert!(
            msg.ends_with(&format!("registry {hostile} unreachable or refused")),
            "{name}: {msg}"
        );
        said.push(msg.replace(name, "NAME"));
    }
    eprintln!("(hostile: redirect to internal services: {:?})", said[0]);
    assert!(
        said.windows(2).all(|w| w[0] == w[1]),
        "one message for open and closed ports: {said:#?}"
    );
    assert_eq!(
        *hits.lock().unwrap(),
        0,
        "the internal service was never asked"
    );
    let log = gw.log();
    assert!(
        log.contains("registry redirect refused") && log.contains("loopback"),
        "the administrators' log says why:\n{}",
        gw.log_tail()
    );
    assert_eq!(gw.files(), Vec::<String>::new());
    report::figure("hostile", "redirects to internal services refused", 3, 3, 0);
}
