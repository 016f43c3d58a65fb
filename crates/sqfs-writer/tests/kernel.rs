//! Images mounted by the Linux kernel (`mount -t squashfs -o loop,ro`), as root, in a
//! private mount namespace of a child process. Skipped loudly when not root.

mod common;

use std::collections::BTreeMap;

use common::*;
use sqfs_writer::Compression;

const BS: u32 = 128 * 1024;

#[test]
fn kernel_mount_shows_the_same_tree_with_every_compressor() {
    for c in ALL_COMPRESSIONS {
        let entries = mixed_tree(BS as usize);
        let (_tmp, image, _) = build(&entries, opts(c, BS, 2));
        let Some((_x, root)) = kernel_copy(&image) else {
            return;
        };
        assert_same_tree(&walk(&root), &expected(&entries));
    }
}

/// The kernel's own view: hardlinks share an inode number and count their names;
/// directories count their subdirectories; the mount is read-only.
#[test]
fn kernel_reports_link_counts_and_shared_inodes() {
    let entries = mixed_tree(BS as usize);
    let (_tmp, image, stats) = build(&entries, opts(Compression::Gzip { level: 9 }, BS, 1));
    let script = r#"find "$MNT" -printf '%y %n %i %P\0'; touch "$MNT/new" 2>/dev/null && echo WRITABLE || true"#;
    let Some(out) = with_kernel_mount(&image, script) else {
        return;
    };
    assert!(!out.ends_with(b"WRITABLE\n"), "the mount is writable");
    let mut seen: BTreeMap<Vec<u8>, (u8, u64, u64)> = BTreeMap::new();
    for rec in out.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let mut f = rec.splitn(4, |&b| b == b' ');
        let kind = f.next().unwrap()[0];
        let nlink = std::str::from_utf8(f.next().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let ino = std::str::from_utf8(f.next().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        seen.insert(f.next().unwrap().to_vec(), (kind, nlink, ino));
    }
    assert_eq!(
        seen.len() as u32,
        stats.inodes + 2,
        "every entry once; two extra names"
    );
    let (a, b, c) = (
        &seen[&b"links/a"[..]],
        &seen[&b"links/b"[..]],
        &seen[&b"other/c"[..]],
    );
    assert_eq!((a.1, b.1, c.1), (3, 3, 3));
    assert!(a.2 == b.2 && b.2 == c.2, "hardlinks have one inode");
    // The root has etc, usr, tmp, home, links, other, names, empty: 8 subdirectories.
    assert_eq!(seen[&b""[..]], (b'd', 10, u64::from(stats.inodes)));
    assert_eq!(seen[&b"empty/dir"[..]].1, 2);
    let inos: std::collections::BTreeSet<u64> = seen.values().map(|v| v.2).collect();
    assert_eq!(
        inos.len() as u32,
        stats.inodes,
        "inode numbers are unique per inode"
    );
}

/// Lookups in big directories go through the directory index; a wrong index makes
/// names unfindable even though readdir lists them.
#[test]
fn kernel_finds_every_name_in_large_directories() {
    let mut entries = Vec::new();
    for i in 0..5000u64 {
        let name = format!("big/entry-{:x}-{i:05}", i * 7919 % 4093);
        entries.push(file(&name, meta(0, 0, 0o644, 0), format!("{i}\n")));
    }
    let (_tmp, image, _) = build(&entries, opts(Compression::Lz4, BS, 2));
    let probes: Vec<String> = [0u64, 1, 255, 256, 257, 1000, 2500, 4095, 4998, 4999]
        .iter()
        .map(|&i| format!("entry-{:x}-{i:05}", i * 7919 % 4093))
        .collect();
    let script = format!(
        r#"cd "$MNT/big"; for n in {}; do cat "$n"; done; test ! -e entry-zzz && echo ABSENT"#,
        probes.join(" ")
    );
    let Some(out) = with_kernel_mount(&image, &script) else {
        return;
    };
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "0\n1\n255\n256\n257\n1000\n2500\n4095\n4998\n4999\nABSENT\n"
    );
    let Some((_x, root)) = kernel_copy(&image) else {
        return;
    };
    assert_same_tree(&walk(&root), &expected(&entries));
}

/// Fragment (512 per block), export (1024) and id (2048 per block) tables spanning
/// several metadata blocks, with lookup tables listing each block.
#[test]
fn tables_spanning_several_metadata_blocks_are_read_back() {
    let mut entries = Vec::new();
    for i in 0..3000u32 {
        let name = format!("d{}/f{i}", i % 7);
        entries.push(file(
            &name,
            meta(10_000 + i, 20_000 + i % 50, 0o644, i),
            text_bytes(i.into(), 1500 + (i % 900) as usize),
        ));
    }
    let (_tmp, image, stats) = build(&entries, opts(Compression::Zstd { level: 3 }, 4096, 2));
    assert!(stats.fragment_blocks > 600, "{stats:?}");
    if can_extract() {
        let (_x, root) = extract(&image);
        assert_same_tree(&walk(&root), &expected(&entries));
    }
    let Some((_y, root)) = kernel_copy(&image) else {
        return;
    };
    assert_same_tree(&walk(&root), &expected(&entries));
}

/// A zero-filled reader that ends with a short marker, without holding the data.
struct ZerosThen {
    zeros: u64,
    tail: &'static [u8],
}

impl std::io::Read for ZerosThen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.zeros > 0 {
            let n = (buf.len() as u64).min(self.zeros) as usize;
            buf[..n].fill(0);
            self.zeros -= n as u64;
            return Ok(n);
        }
        let n = buf.len().min(self.tail.len());
        buf[..n].copy_from_slice(&self.tail[..n]);
        self.tail = &self.tail[n..];
        Ok(n)
    }
}

/// Sizes past 4 GiB need the extended file inode; the kernel must see the size and
/// the data at the end.
#[test]
fn files_over_4_gib_are_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("big.sqfs");
    let o = opts(Compression::Lz4, 1 << 20, 2);
    let mut w = sqfs_writer::Writer::new(std::fs::File::create(&image).unwrap(), o).unwrap();
    let size = (4u64 << 30) + (1 << 20) + 3;
    let mut data = ZerosThen {
        zeros: size - 3,
        tail: b"end",
    };
    assert_eq!(
        w.add_file(b"huge", meta(0, 0, 0o644, 0), &mut data)
            .unwrap(),
        size
    );
    let (_, stats) = w.finish().unwrap();
    assert_eq!(stats.sparse_blocks, 4097);
    let Some(out) = with_kernel_mount(&image, r#"stat -c %s "$MNT/huge"; tail -c 3 "$MNT/huge""#)
    else {
        return;
    };
    assert_eq!(String::from_utf8(out).unwrap(), format!("{size}\nend"));
}

/// Images without fragments, and an image with nothing but its root, are valid too.
#[test]
fn images_without_fragments_or_without_entries_mount() {
    let empty: Vec<E> = Vec::new();
    let blocks = vec![
        file("one-block", meta(0, 0, 0o644, 0), text_bytes(1, 4096)),
        dir("d", meta(0, 0, 0o700, 0)),
    ];
    for entries in [empty, blocks] {
        let (_tmp, image, stats) = build(&entries, opts(Compression::Gzip { level: 9 }, 4096, 1));
        assert_eq!(stats.fragment_blocks, 0);
        if can_extract() {
            let (_x, root) = extract(&image);
            assert_same_tree(&walk(&root), &expected(&entries));
        }
        let Some((_y, root)) = kernel_copy(&image) else {
            return;
        };
        assert_same_tree(&walk(&root), &expected(&entries));
    }
}
