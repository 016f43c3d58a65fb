//! Images read back with unsquashfs 4.5: listings, extracted content and metadata.

mod common;

use std::fs::File;

use common::*;
use sqfs_writer::{Compression, Error, Writer};

const BS: u32 = 128 * 1024;
const GZIP: Compression = Compression::Gzip { level: 9 };

#[test]
fn unsquashfs_extracts_content_owners_modes_times_links_and_odd_names() {
    if !can_extract() {
        return;
    }
    let entries = mixed_tree(BS as usize);
    let (_tmp, image, stats) = build(&entries, opts(GZIP, BS, 2));
    let (_x, root) = extract(&image);
    assert_same_tree(&walk(&root), &expected(&entries));
    assert_eq!(stats.hardlinks, 2);
    assert_eq!(stats.sparse_blocks, 3);
}

#[test]
fn lln_listing_shows_modes_owners_sizes_times_and_targets() {
    if !unsquashfs_available() {
        return;
    }
    let entries = vec![
        file("a/suid", meta(0, 0, 0o4755, 86400), "x"),
        dir("a", meta(1000, 100, 0o2750, 86460)),
        dir("t", meta(0, 0, 0o1777, 0)),
        symlink("a/link", meta(5, 6, 0o700, 1_700_000_000), "../t/target"),
        file(
            "t/data",
            meta(65534, 65534, 0o600, 0),
            random_bytes(1, 300_000),
        ),
        hardlink("t/data2", "t/data"),
    ];
    let (_tmp, image, _) = build(&entries, opts(GZIP, BS, 1));
    let got: Vec<Vec<String>> = lln(&image)
        .iter()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    let row = |perm: &str, owner: &str, size: &str, date: &str, path: &str| -> Vec<String> {
        let mut r: Vec<String> = [perm, owner, size]
            .iter()
            .map(|s| s.to_string())
            .chain(date.split(' ').map(str::to_owned))
            .collect();
        r.extend(path.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
        r
    };
    let dirs_unsized: Vec<Vec<String>> = got
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r[0].starts_with('d') {
                r[2] = "-".into();
            }
            r
        })
        .collect();
    assert_eq!(
        dirs_unsized,
        vec![
            row("drwxr-xr-x", "0/0", "-", "1970-01-01 00:00", ""),
            row("drwxr-s---", "1000/100", "-", "1970-01-02 00:01", "/a"),
            row(
                "lrwxrwxrwx",
                "5/6",
                "11",
                "2023-11-14 22:13",
                "/a/link -> ../t/target"
            ),
            row("-rwsr-xr-x", "0/0", "1", "1970-01-02 00:00", "/a/suid"),
            row("drwxrwxrwt", "0/0", "-", "1970-01-01 00:00", "/t"),
            row(
                "-rw-------",
                "65534/65534",
                "300000",
                "1970-01-01 00:00",
                "/t/data"
            ),
            row(
                "-rw-------",
                "65534/65534",
                "300000",
                "1970-01-01 00:00",
                "/t/data2"
            ),
        ]
    );
}

#[test]
fn no_xattrs_are_stored() {
    if !unsquashfs_available() {
        return;
    }
    let (_tmp, image, _) = build(&mixed_tree(BS as usize), opts(GZIP, BS, 0));
    let stat = unsquashfs_stat(&image);
    assert!(stat.contains("Xattrs are not stored"), "{stat}");
}

#[test]
fn every_compressor_and_block_size_roundtrips() {
    if !can_extract() {
        return;
    }
    for c in ALL_COMPRESSIONS {
        for bs in [4096u32, 1 << 20] {
            let entries = mixed_tree(bs as usize);
            let (_tmp, image, _) = build(&entries, opts(c, bs, 2));
            let stat = unsquashfs_stat(&image);
            let name = match c {
                Compression::Gzip { .. } => "gzip",
                Compression::Zstd { .. } => "zstd",
                Compression::Lz4 => "lz4",
            };
            assert!(
                stat.contains(&format!("Compression {name}")),
                "{c:?}: {stat}"
            );
            assert!(stat.contains(&format!("Block size {bs}")), "{c:?}: {stat}");
            let (_x, root) = extract(&image);
            assert_same_tree(&walk(&root), &expected(&entries));
        }
    }
}

#[test]
fn deep_trees_roundtrip() {
    if !can_extract() {
        return;
    }
    let mut path = String::new();
    let mut entries = Vec::new();
    for depth in 0..150 {
        if depth > 0 {
            path.push('/');
        }
        path.push_str(&format!("d{depth}"));
        if depth % 10 == 0 {
            entries.push(file(
                &format!("{path}/f"),
                meta(0, 0, 0o644, depth),
                format!("{depth}"),
            ));
        }
    }
    entries.push(symlink(
        &format!("{path}/up"),
        meta(0, 0, 0o777, 0),
        "../../..",
    ));
    let (_tmp, image, _) = build(&entries, opts(GZIP, BS, 1));
    let (_x, root) = extract(&image);
    assert_same_tree(&walk(&root), &expected(&entries));
}

/// Big directories span several metadata blocks and need more than one header and a
/// directory index; a huge number of inodes spans many inode blocks.
#[test]
fn many_small_files_and_large_directories_roundtrip() {
    if !can_extract() {
        return;
    }
    let mut entries = Vec::new();
    for i in 0..6000u64 {
        let name = format!("big/file-with-a-longish-name-{i:05}");
        entries.push(file(
            &name,
            meta((i % 3) as u32, 0, 0o644, i as u32),
            text_bytes(i, (i % 700) as usize),
        ));
    }
    for i in 0..400 {
        entries.push(dir(&format!("many/sub{i:03}"), meta(0, 0, 0o755, 0)));
        entries.push(symlink(
            &format!("many/sub{i:03}/l"),
            meta(0, 0, 0o777, 0),
            "x",
        ));
    }
    let (_tmp, image, stats) = build(&entries, opts(GZIP, BS, 2));
    assert_eq!(stats.files, 6000);
    let (_x, root) = extract(&image);
    assert_same_tree(&walk(&root), &expected(&entries));
}

#[test]
fn incompressible_blocks_are_stored_raw() {
    if !can_extract() {
        return;
    }
    let data = random_bytes(42, 1 << 20);
    let entries = vec![file("random", meta(0, 0, 0o644, 0), data.clone())];
    let (_tmp, image, _) = build(&entries, opts(Compression::Zstd { level: 19 }, BS, 2));
    let size = std::fs::metadata(&image).unwrap().len();
    assert!(size <= (1 << 20) + 8192, "random data grew to {size} bytes");
    let (_x, root) = extract(&image);
    assert_eq!(std::fs::read(root.join("random")).unwrap(), data);
}

#[test]
fn zero_blocks_cost_nothing() {
    if !can_extract() {
        return;
    }
    let entries = vec![file("zeros", meta(0, 0, 0o644, 0), vec![0u8; 64 << 20])];
    let (_tmp, image, stats) = build(&entries, opts(GZIP, BS, 2));
    assert_eq!(stats.sparse_blocks, 512);
    assert!(std::fs::metadata(&image).unwrap().len() <= 8192);
    let (_x, root) = extract(&image);
    let got = std::fs::read(root.join("zeros")).unwrap();
    assert!(got.len() == 64 << 20 && got.iter().all(|&b| b == 0));
}

#[test]
fn identical_files_are_stored_once() {
    if !can_extract() {
        return;
    }
    let big = random_bytes(5, 3 * BS as usize + 100);
    let small = random_bytes(6, 1000);
    let entries = vec![
        file("a/big", meta(0, 0, 0o644, 0), big.clone()),
        file("a/small", meta(0, 0, 0o644, 0), small.clone()),
        file("b/big", meta(1, 1, 0o600, 9), big.clone()),
        file("b/small", meta(1, 1, 0o600, 9), small.clone()),
        file("c/other", meta(0, 0, 0o644, 0), random_bytes(7, 50_000)),
    ];
    let (_tmp, image, stats) = build(&entries, opts(GZIP, BS, 2));
    assert_eq!(stats.duplicate_files, 2);
    assert!(
        stats.image_bytes < big.len() as u64 + 70_000,
        "duplicates were stored: {stats:?}"
    );
    let (_x, root) = extract(&image);
    assert_same_tree(&walk(&root), &expected(&entries));
}

#[test]
fn refused_entries_leave_the_writer_usable() {
    if !can_extract() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("i.sqfs");
    let mut w = Writer::new(File::create(&path).unwrap(), opts(GZIP, BS, 1)).unwrap();
    let m = meta(0, 0, 0o644, 0);
    w.add_file(b"d/f", m, &mut &b"data"[..]).unwrap();
    let errs = [
        w.add_file(b"d/f", m, &mut &b"again"[..]).unwrap_err(),
        w.add_file(b"d", m, &mut &b"x"[..]).unwrap_err(),
        w.add_dir(b"d/f/sub", m).unwrap_err(),
        w.add_symlink(b"/abs", m, b"t").unwrap_err(),
        w.add_dir(b"x/../y", m).unwrap_err(),
        w.add_dir(b"mode", meta(0, 0, 0o40755, 0)).unwrap_err(),
        w.add_hardlink(b"h", b"d").unwrap_err(),
        w.add_symlink(b"s", m, b"").unwrap_err(),
    ];
    assert!(matches!(errs[0], Error::Duplicate { .. }), "{}", errs[0]);
    assert!(matches!(errs[1], Error::IsADirectory { .. }), "{}", errs[1]);
    assert!(
        matches!(&errs[2], Error::NotADirectory { path } if path.0 == b"d/f"),
        "{}",
        errs[2]
    );
    assert!(matches!(errs[3], Error::BadPath { .. }), "{}", errs[3]);
    assert!(matches!(errs[4], Error::BadPath { .. }), "{}", errs[4]);
    assert!(matches!(errs[5], Error::BadMode { .. }), "{}", errs[5]);
    assert!(matches!(errs[6], Error::BadHardlink { .. }), "{}", errs[6]);
    assert!(matches!(errs[7], Error::BadSymlink { .. }), "{}", errs[7]);
    assert_eq!(
        errs[2].to_string(),
        "cannot add below /d/f: it is not a directory in the image"
    );
    w.finish().unwrap();
    let (_x, root) = extract(&path);
    assert_eq!(std::fs::read(root.join("d/f")).unwrap(), b"data");
}

struct FailingReader(usize);

impl std::io::Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0 == 0 {
            return Err(std::io::Error::other("layer truncated"));
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(b'x');
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn a_failing_reader_is_reported_and_stops_the_writer() {
    let mut w = Writer::new(std::io::Cursor::new(Vec::new()), opts(GZIP, 4096, 1)).unwrap();
    let err = w
        .add_file(b"f", meta(0, 0, 0o644, 0), &mut FailingReader(10_000))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Read { path, .. } if path.0 == b"f"),
        "{err}"
    );
    assert!(err.to_string().contains("layer truncated"));
    assert!(matches!(
        w.add_dir(b"d", meta(0, 0, 0o755, 0)),
        Err(Error::Poisoned)
    ));
    assert!(matches!(w.finish(), Err(Error::Poisoned)));
}

#[test]
fn bad_options_are_refused() {
    let new = |o| Writer::new(std::io::Cursor::new(Vec::new()), o).err();
    assert!(matches!(
        new(opts(GZIP, 3000, 1)),
        Some(Error::BadOption(_))
    ));
    assert!(matches!(
        new(opts(GZIP, 2 << 20, 1)),
        Some(Error::BadOption(_))
    ));
    assert!(matches!(
        new(opts(Compression::Gzip { level: 10 }, BS, 1)),
        Some(Error::BadOption(_))
    ));
    assert!(matches!(
        new(opts(Compression::Zstd { level: 0 }, BS, 1)),
        Some(Error::BadOption(_))
    ));
}

/// The converter writes through a BufWriter; taking back a duplicate's blocks seeks
/// through it, and a duplicate at the very end leaves zeros past the image.
#[test]
fn duplicates_taken_back_through_a_bufwriter_leave_a_valid_image() {
    if !can_extract() {
        return;
    }
    let big = random_bytes(11, 5 * BS as usize + 7);
    let entries = vec![
        file("first", meta(0, 0, 0o644, 0), big.clone()),
        file("middle", meta(0, 0, 0o644, 0), text_bytes(3, 20_000)),
        file("same-again", meta(0, 0, 0o644, 0), big.clone()),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("b.sqfs");
    let out = std::io::BufWriter::with_capacity(1 << 16, File::create(&path).unwrap());
    let mut w = Writer::new(out, opts(GZIP, BS, 2)).unwrap();
    for e in &entries {
        apply(&mut w, e);
    }
    let (out, stats) = w.finish().unwrap();
    let f = out.into_inner().unwrap();
    assert_eq!(stats.duplicate_files, 1);
    assert!(stats.written_bytes > stats.image_bytes, "{stats:?}");
    let tail = std::fs::read(&path).unwrap()[stats.image_bytes as usize..].to_vec();
    assert!(
        tail.iter().all(|&b| b == 0),
        "stale bytes past the image are zeroed"
    );
    f.set_len(stats.image_bytes).unwrap();
    let (_x, root) = extract(&path);
    assert_same_tree(&walk(&root), &expected(&entries));
}
