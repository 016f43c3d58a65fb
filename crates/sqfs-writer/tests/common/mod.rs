//! Helpers shared by the integration tests: describe entries, write them with the
//! writer, read images back with unsquashfs or the kernel, and compare trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sqfs_writer::{Compression, Meta, Options, Stats, Writer};
use tempfile::TempDir;

/// One call to the writer.
#[derive(Debug, Clone)]
pub enum E {
    Dir(Vec<u8>, Meta),
    File(Vec<u8>, Meta, Vec<u8>),
    Symlink(Vec<u8>, Meta, Vec<u8>),
    Hardlink(Vec<u8>, Vec<u8>),
}

pub fn meta(uid: u32, gid: u32, mode: u16, mtime: u32) -> Meta {
    Meta {
        uid,
        gid,
        mode,
        mtime,
    }
}

pub fn dir(p: &str, m: Meta) -> E {
    E::Dir(p.into(), m)
}
pub fn file(p: &str, m: Meta, data: impl Into<Vec<u8>>) -> E {
    E::File(p.into(), m, data.into())
}
pub fn symlink(p: &str, m: Meta, target: &str) -> E {
    E::Symlink(p.into(), m, target.into())
}
pub fn hardlink(p: &str, target: &str) -> E {
    E::Hardlink(p.into(), target.into())
}

pub fn opts(compression: Compression, block_size: u32, threads: usize) -> Options {
    Options {
        compression,
        block_size,
        threads,
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), incompressible.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Deterministic text-like bytes: words from a small vocabulary, compressing roughly
/// like source code or documentation.
pub fn text_bytes(seed: u64, n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the", "image", "squashfs", "block", "return", "fn", "let", "mut", "self", "data", "if",
        "else", "for", "in", "match", "Some", "None", "Ok", "Err", "node", "cluster", "slurm",
        "mount", "loop", "user", "0x7f", "42", "==", "{", "}", "(", ");", "\n", "    ", "// why:",
        "inode", "table", "fragment", "compress", "write", "read",
    ];
    let r = random_bytes(seed, n / 2 + 16);
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 0;
    while out.len() < n {
        let w = WORDS[r[i % r.len()] as usize % WORDS.len()];
        out.extend_from_slice(w.as_bytes());
        out.push(if r[(i + 1) % r.len()] % 7 == 0 {
            b'\n'
        } else {
            b' '
        });
        i += 1;
    }
    out.truncate(n);
    out
}

pub fn apply<W: std::io::Write + std::io::Seek>(w: &mut Writer<W>, e: &E) {
    match e {
        E::Dir(p, m) => w.add_dir(p, *m).unwrap(),
        E::File(p, m, d) => assert_eq!(w.add_file(p, *m, &mut &d[..]).unwrap(), d.len() as u64),
        E::Symlink(p, m, t) => w.add_symlink(p, *m, t).unwrap(),
        E::Hardlink(p, t) => w.add_hardlink(p, t).unwrap(),
    }
}

/// Writes `entries` in order into `<tmp>/image.sqfs`.
pub fn build(entries: &[E], o: Options) -> (TempDir, PathBuf, Stats) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("image.sqfs");
    let mut w = Writer::new(File::create(&path).unwrap(), o).unwrap();
    for e in entries {
        apply(&mut w, e);
    }
    let (f, stats) = w.finish().unwrap();
    assert_eq!(stats.written_bytes, fs::metadata(&path).unwrap().len());
    // What a caller writing to a file does: drop zeroed blocks taken back past the end.
    f.set_len(stats.image_bytes).unwrap();
    (tmp, path, stats)
}

/// What a user sees of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: char,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub mtime: i64,
    /// File content or symlink target.
    pub content: Vec<u8>,
    /// Link count of regular files (directories' counts depend on the extracting fs).
    pub nlink: u64,
}

/// The tree `entries` should produce, keyed by relative path ("" is the root).
pub fn expected(entries: &[E]) -> BTreeMap<Vec<u8>, Seen> {
    let implicit = Seen {
        kind: 'd',
        uid: 0,
        gid: 0,
        mode: 0o755,
        mtime: 0,
        content: vec![],
        nlink: 0,
    };
    let mut t = BTreeMap::new();
    t.insert(Vec::new(), implicit.clone());
    let mut groups: Vec<Vec<Vec<u8>>> = Vec::new();
    for e in entries {
        let (p, seen) = match e {
            E::Dir(p, m) => (p, seen('d', m, vec![])),
            E::File(p, m, d) => {
                groups.push(vec![p.clone()]);
                (p, seen('f', m, d.clone()))
            }
            E::Symlink(p, m, target) => {
                let m = Meta { mode: 0o777, ..*m };
                (p, seen('l', &m, target.clone()))
            }
            E::Hardlink(p, target) => {
                let s = t[target].clone();
                groups
                    .iter_mut()
                    .find(|g| g.contains(target))
                    .unwrap()
                    .push(p.clone());
                (p, s)
            }
        };
        for (i, _) in p.iter().enumerate().filter(|(_, &b)| b == b'/') {
            t.entry(p[..i].to_vec()).or_insert_with(|| implicit.clone());
        }
        t.insert(p.clone(), seen);
    }
    for g in groups {
        for p in &g {
            t.get_mut(p).unwrap().nlink = g.len() as u64;
        }
    }
    t
}

fn seen(kind: char, m: &Meta, content: Vec<u8>) -> Seen {
    Seen {
        kind,
        uid: m.uid,
        gid: m.gid,
        mode: u32::from(m.mode),
        mtime: i64::from(m.mtime),
        content,
        nlink: if kind == 'f' { 1 } else { 0 },
    }
}

/// Reads a tree from disk the way `expected` describes it.
pub fn walk(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    let mut t = BTreeMap::new();
    walk_into(root, Vec::new(), &mut t);
    t
}

fn walk_into(path: &Path, rel: Vec<u8>, t: &mut BTreeMap<Vec<u8>, Seen>) {
    let m = fs::symlink_metadata(path).unwrap();
    let ft = m.file_type();
    let (kind, content, nlink) = if ft.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(n.as_bytes());
            walk_into(&path.join(&n), r, t);
        }
        ('d', vec![], 0)
    } else if ft.is_symlink() {
        (
            'l',
            fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec(),
            0,
        )
    } else {
        assert!(ft.is_file(), "unexpected file type at {}", path.display());
        ('f', fs::read(path).unwrap(), m.nlink())
    };
    t.insert(
        rel,
        Seen {
            kind,
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            content,
            nlink,
        },
    );
}

/// Asserts two trees are equal, naming the first differing path.
pub fn assert_same_tree(got: &BTreeMap<Vec<u8>, Seen>, want: &BTreeMap<Vec<u8>, Seen>) {
    for (p, w) in want {
        let shown = String::from_utf8_lossy(p);
        let g = got.get(p).unwrap_or_else(|| panic!("{shown:?} is missing"));
        if g != w {
            let short = |s: &Seen| Seen {
                content: s.content.iter().take(40).copied().collect(),
                ..s.clone()
            };
            assert_eq!(
                g.content.len(),
                w.content.len(),
                "content length of {shown:?}"
            );
            assert!(g.content == w.content, "content of {shown:?} differs");
            assert_eq!(short(g), short(w), "{shown:?}");
        }
    }
    let extra: Vec<_> = got.keys().filter(|p| !want.contains_key(*p)).collect();
    assert!(extra.is_empty(), "unexpected entries: {extra:?}");
}

pub fn unsquashfs_available() -> bool {
    // unsquashfs 4.5 exits 1 after printing its version, so look at what it printed.
    let ok = Command::new("unsquashfs")
        .arg("-version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("unsquashfs version"));
    if !ok {
        test_skip::skip(
            "sqfs-writer unsquashfs checks",
            "unsquashfs is not installed (apt-get install squashfs-tools)",
        );
    }
    ok
}

/// Extracting with every owner and mode restored (setgid for foreign groups, chown,
/// entries inside 0500 directories) needs root.
pub fn can_extract() -> bool {
    if !unsquashfs_available() {
        return false;
    }
    if !is_root() {
        test_skip::skip(
            "sqfs-writer unsquashfs -d",
            "needs root to restore owners and modes",
        );
        return false;
    }
    true
}

pub fn mksquashfs_available() -> bool {
    let ok = Command::new("mksquashfs")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        test_skip::skip(
            "sqfs-writer mksquashfs comparison",
            "mksquashfs is not installed (apt-get install squashfs-tools)",
        );
    }
    ok
}

/// Extracts `image` with `unsquashfs -d`, failing on any complaint.
pub fn extract(image: &Path) -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    let out = Command::new("unsquashfs")
        .args(["-no-progress", "-d"])
        .arg(&dest)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "unsquashfs -d failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (tmp, dest)
}

/// `unsquashfs -lln` in UTC, without the `squashfs-root` prefix, failing on complaints.
pub fn lln(image: &Path) -> Vec<String> {
    let out = Command::new("unsquashfs")
        .env("TZ", "UTC")
        .arg("-lln")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "unsquashfs -lln failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("squashfs-root"))
        .map(|l| l.replace("squashfs-root", ""))
        .collect()
}

pub fn unsquashfs_stat(image: &Path) -> String {
    let out = Command::new("unsquashfs")
        .arg("-stat")
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

static MOUNTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Mounts `image` with the kernel (`mount -t squashfs -o loop,ro`) inside a private
/// mount namespace of a child process, so nothing leaks into the test process or the
/// host, and runs `script` there with `$MNT` set. Returns stdout, or None (with a loud
/// message) when not root.
pub fn with_kernel_mount(image: &Path, script: &str) -> Option<Vec<u8>> {
    if !is_root() {
        test_skip::skip("sqfs-writer kernel mount", "needs root");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // Concurrent loop setups can race for the same free device (EBUSY): retry.
    let full = format!(
        "for i in 1 2 3 4 5; do mount -t squashfs -o loop,ro \"$IMG\" \"$MNT\" && break; sleep 0.3; done; \
         mountpoint -q \"$MNT\" || exit 1; set -e; {script}"
    );
    let _one_at_a_time = MOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &full])
        .env("IMG", image)
        .env("MNT", &mnt)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kernel mount or script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

/// Copies the kernel's view of `image` (cp -a keeps owners, modes, times, hardlinks).
pub fn kernel_copy(image: &Path) -> Option<(TempDir, PathBuf)> {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    fs::create_dir(&dest).unwrap();
    let script = format!("cp -a \"$MNT/.\" '{}/'", dest.display());
    with_kernel_mount(image, &script)?;
    Some((tmp, dest))
}

/// Feeds a directory on disk to the writer (sorted, hardlinks by inode), with every
/// mtime replaced by `mtime` when given.
pub fn add_tree<W: std::io::Write + std::io::Seek>(
    w: &mut Writer<W>,
    root: &Path,
    mtime: Option<u32>,
) {
    let mut seen = BTreeMap::new();
    add_tree_into(w, root, Vec::new(), mtime, &mut seen);
}

fn add_tree_into<W: std::io::Write + std::io::Seek>(
    w: &mut Writer<W>,
    path: &Path,
    rel: Vec<u8>,
    mtime: Option<u32>,
    seen: &mut BTreeMap<(u64, u64), Vec<u8>>,
) {
    let m = fs::symlink_metadata(path).unwrap();
    let meta = Meta {
        uid: m.uid(),
        gid: m.gid(),
        mode: (m.mode() & 0o7777) as u16,
        mtime: mtime.unwrap_or(m.mtime() as u32),
    };
    let ft = m.file_type();
    if ft.is_dir() {
        w.add_dir(&rel, meta).unwrap();
        let mut names: Vec<_> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(n.as_bytes());
            add_tree_into(w, &path.join(&n), r, mtime, seen);
        }
    } else if ft.is_symlink() {
        w.add_symlink(
            &rel,
            meta,
            fs::read_link(path).unwrap().as_os_str().as_bytes(),
        )
        .unwrap();
    } else if ft.is_file() {
        if m.nlink() > 1 {
            if let Some(first) = seen.get(&(m.dev(), m.ino())) {
                w.add_hardlink(&rel, first).unwrap();
                return;
            }
            seen.insert((m.dev(), m.ino()), rel.clone());
        }
        w.add_file(&rel, meta, &mut File::open(path).unwrap())
            .unwrap();
    }
}

/// A tree exercising everything the writer supports (odd names included).
pub fn mixed_tree(bs: usize) -> Vec<E> {
    let t = 1_700_000_000;
    let long_name = "n".repeat(255);
    let mut big = text_bytes(7, 3 * bs);
    big.extend_from_slice(&random_bytes(8, 2 * bs + 12345));
    let mut sparse = vec![0u8; 3 * bs];
    sparse.extend_from_slice(b"end");
    let mut v = vec![
        dir("", meta(0, 0, 0o755, t)),
        file(
            "etc/passwd",
            meta(0, 0, 0o644, t + 1),
            "root:x:0:0::/root:/bin/sh\n",
        ),
        file(
            "usr/bin/suid",
            meta(0, 0, 0o4755, t + 2),
            text_bytes(1, 5000),
        ),
        file(
            "usr/bin/sgid",
            meta(0, 50, 0o2711, t + 3),
            text_bytes(2, 100),
        ),
        dir("tmp", meta(0, 0, 0o1777, t + 4)),
        dir("home/user", meta(1000, 1000, 0o700, t + 5)),
        file("home/user/empty", meta(1000, 1000, 0o600, t + 6), vec![]),
        file(
            "home/user/block",
            meta(1000, 1000, 0o640, 1),
            text_bytes(3, bs),
        ),
        file(
            "home/user/block+1",
            meta(1000, 100, 0o640, 2),
            text_bytes(4, bs + 1),
        ),
        file(
            "home/user/2block-1",
            meta(1000, 100, 0o640, 3),
            text_bytes(5, 2 * bs - 1),
        ),
        file("home/user/big", meta(65534, 65534, 0o644, 4), big),
        file(
            "home/user/sparse",
            meta(1_000_000, 2_000_000, 0o644, 5),
            sparse,
        ),
        file(
            "home/user/random",
            meta(7, 7, 0o400, 6),
            random_bytes(9, bs / 2 + 3),
        ),
        symlink("bin", meta(0, 0, 0o777, t + 7), "usr/bin"),
        symlink(
            "home/user/abs",
            meta(1000, 1000, 0o777, t + 8),
            "/etc/passwd",
        ),
        symlink(
            "home/user/dangling",
            meta(0, 0, 0o777, t + 9),
            "../no such file",
        ),
        file("links/a", meta(3, 4, 0o755, t + 10), text_bytes(6, 777)),
        hardlink("links/b", "links/a"),
        hardlink("other/c", "links/a"),
        file(&format!("names/{long_name}"), meta(0, 0, 0o644, 0), "long"),
        file("names/with space", meta(0, 0, 0o644, 0), "space"),
        file("names/back\\slash", meta(0, 0, 0o644, 0), "slash"),
        file("names/-dash", meta(0, 0, 0o644, 0), "dash"),
        file("names/unicode-äöü-日本", meta(0, 0, 0o644, 0), "utf8"),
        dir("usr", meta(0, 0, 0o755, t + 11)),
        dir("empty/dir", meta(0, 0, 0o555, t + 12)),
    ];
    v.push(E::File(
        b"names/\xff\xfe-latin1".to_vec(),
        meta(0, 0, 0o644, 0),
        b"raw".to_vec(),
    ));
    v.push(E::File(
        b"names/new\nline".to_vec(),
        meta(0, 0, 0o644, 0),
        b"nl".to_vec(),
    ));
    v
}

pub const ALL_COMPRESSIONS: [Compression; 6] = [
    Compression::Gzip { level: 9 },
    Compression::Gzip { level: 1 },
    Compression::Zstd { level: 15 },
    Compression::Zstd { level: 3 },
    Compression::Zstd { level: 22 },
    Compression::Lz4,
];
