//! The same tree through this writer and through mksquashfs 4.5: the listings match
//! and the image is no more than a few percent larger.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{symlink as mklink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;
use sqfs_writer::{Compression, Writer};

const MTIME: u32 = 1_700_000_000;

/// A tree shaped like a small distribution: many small text files, some large ones,
/// a few incompressible binaries, duplicates, symlinks and hardlinks.
fn make_tree(root: &Path) {
    let mut rng = 99u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for d in 0..60 {
        let dir = root.join(format!("usr/share/pkg{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            let size = match next() % 10 {
                0..=5 => next() % 2000,
                6..=8 => next() % 20_000,
                _ => next() % 150_000,
            } as usize;
            fs::write(
                dir.join(format!("file{f:02}.txt")),
                text_bytes(next(), size),
            )
            .unwrap();
        }
        mklink("file00.txt", dir.join("link")).unwrap();
    }
    let bin = root.join("usr/lib");
    fs::create_dir_all(&bin).unwrap();
    for i in 0..12 {
        let size = 50_000 + (next() % 700_000) as usize;
        let mut data = random_bytes(next(), size / 3);
        data.extend(text_bytes(next(), size - size / 3));
        fs::write(bin.join(format!("lib{i}.so")), &data).unwrap();
    }
    for i in 0..4 {
        fs::copy(
            bin.join(format!("lib{i}.so")),
            bin.join(format!("copy{i}.so")),
        )
        .unwrap();
        fs::copy(
            root.join(format!("usr/share/pkg0{i}/file01.txt")),
            root.join(format!("usr/share/pkg1{i}/dup.txt")),
        )
        .unwrap();
    }
    fs::hard_link(bin.join("lib5.so"), bin.join("hard5.so")).unwrap();
    fs::create_dir_all(root.join("big")).unwrap();
    fs::write(root.join("big/log"), text_bytes(7, 6 << 20)).unwrap();

    // Owners, special modes, odd names, empty files and directories.
    let odd = root.join("odd");
    fs::create_dir_all(odd.join("empty-dir")).unwrap();
    for (name, mode, owner) in [
        ("suid", 0o4755, (0, 0)),
        ("sgid", 0o2755, (0, 50)),
        ("private", 0o600, (1000, 1000)),
        ("nobody", 0o644, (65534, 65534)),
        ("with space", 0o644, (0, 0)),
        ("ünïcödé", 0o644, (0, 0)),
        ("empty", 0o644, (2, 3)),
    ] {
        let p = odd.join(name);
        let data = if name == "empty" {
            vec![]
        } else {
            text_bytes(name.len() as u64, 3000)
        };
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        if is_root() {
            std::os::unix::fs::chown(&p, Some(owner.0), Some(owner.1)).unwrap();
        }
    }
    fs::set_permissions(odd.join("empty-dir"), fs::Permissions::from_mode(0o1777)).unwrap();
    mklink("/absolute/target", odd.join("abs")).unwrap();
}

fn mksquashfs(src: &Path, out: &Path, comp: &[&str]) -> u64 {
    let status = Command::new("mksquashfs")
        .arg(src)
        .arg(out)
        .args([
            "-noappend",
            "-no-xattrs",
            "-all-time",
            &MTIME.to_string(),
            "-quiet",
            "-no-progress",
        ])
        .arg("-comp")
        .args(comp)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    fs::metadata(out).unwrap().len()
}

fn ours(src: &Path, out: &Path, c: Compression) -> u64 {
    let mut w = Writer::new(File::create(out).unwrap(), opts(c, 128 * 1024, 0)).unwrap();
    add_tree(&mut w, src, Some(MTIME));
    w.finish().unwrap().1.image_bytes
}

/// Listing lines with directory sizes blanked: they count listing bytes, whose header
/// layout legitimately differs between writers.
fn listing(image: &Path) -> Vec<String> {
    lln(image)
        .into_iter()
        .map(|l| {
            let mut f: Vec<&str> = l.split_whitespace().collect();
            if f[0].starts_with('d') {
                f[2] = "-";
            }
            f.join(" ")
        })
        .collect()
}

fn compare(src: &Path, what: &str, max_ratio: f64) {
    let tmp = tempfile::tempdir().unwrap();
    for (c, comp) in [
        (Compression::Gzip { level: 9 }, &["gzip"][..]),
        (
            Compression::Zstd { level: 3 },
            &["zstd", "-Xcompression-level", "3"][..],
        ),
        (Compression::Lz4, &["lz4"][..]),
    ] {
        let (a, b) = (
            tmp.path().join("ours.sqfs"),
            tmp.path().join("mksquashfs.sqfs"),
        );
        let ours = ours(src, &a, c);
        let theirs = mksquashfs(src, &b, comp);
        let ratio = ours as f64 / theirs as f64;
        eprintln!(
            "{what} {c:?}: sqfs-writer {ours} bytes, mksquashfs {theirs} bytes, ratio {ratio:.4}"
        );
        assert_eq!(listing(&a), listing(&b), "{what} {c:?}: listings differ");
        assert!(ratio <= max_ratio, "{what} {c:?}: {ours} vs {theirs} bytes");
    }
}

#[test]
fn generated_tree_matches_mksquashfs_listing_and_size() {
    if !mksquashfs_available() || !unsquashfs_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    make_tree(tmp.path());
    compare(tmp.path(), "generated tree", 1.02);
}

#[test]
fn system_perl_library_matches_mksquashfs_listing_and_size() {
    if !mksquashfs_available() || !unsquashfs_available() {
        return;
    }
    let src = Path::new("/usr/share/perl");
    if !src.is_dir() {
        test_skip::skip(
            "vs_mksquashfs",
            &format!("{} is not there to compare with", src.display()),
        );
        return;
    }
    compare(src, "/usr/share/perl", 1.02);
}
