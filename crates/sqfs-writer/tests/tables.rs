//! Checks of tables that neither unsquashfs nor a plain mount reads: the export (NFS)
//! table must map every inode number to the inode carrying that number.

mod common;

use std::collections::BTreeMap;

use common::*;
use sqfs_writer::Compression;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Decompresses the metadata blocks in `image[start..end]`; returns the bytes and, for
/// each block, its compressed offset from `start` and its uncompressed offset.
fn metadata(image: &[u8], start: usize, end: usize) -> (Vec<u8>, BTreeMap<u64, usize>) {
    let mut d = libdeflater::Decompressor::new();
    let (mut p, mut out, mut blocks) = (start, Vec::new(), BTreeMap::new());
    while p < end {
        blocks.insert((p - start) as u64, out.len());
        let h = u16_at(image, p);
        let n = (h & 0x7fff) as usize;
        let body = &image[p + 2..p + 2 + n];
        if h & 0x8000 != 0 {
            out.extend_from_slice(body);
        } else {
            let mut buf = vec![0; 8192];
            let m = d.zlib_decompress(body, &mut buf).unwrap();
            out.extend_from_slice(&buf[..m]);
        }
        p += 2 + n;
    }
    (out, blocks)
}

#[test]
fn export_table_maps_each_inode_number_to_its_inode() {
    let mut entries = mixed_tree(128 * 1024);
    for i in 0..2500 {
        entries.push(file(&format!("many/f{i}"), meta(0, 0, 0o644, 0), vec![]));
    }
    let (_tmp, path, stats) = build(&entries, opts(Compression::Gzip { level: 9 }, 131072, 1));
    let image = std::fs::read(path).unwrap();
    let inode_count = u32_at(&image, 4) as usize;
    assert_eq!(inode_count as u32, stats.inodes);
    let (inode_start, dir_start, export_start) = (
        u64_at(&image, 64) as usize,
        u64_at(&image, 72) as usize,
        u64_at(&image, 88) as usize,
    );
    let (inodes, inode_blocks) = metadata(&image, inode_start, dir_start);

    // The lookup table lists the export table's metadata blocks, which end where the
    // list starts; 1024 references fit in one block.
    let lists = inode_count.div_ceil(1024);
    let first_block = u64_at(&image, export_start) as usize;
    let (refs, _) = metadata(&image, first_block, export_start);
    for b in 1..lists {
        assert!(u64_at(&image, export_start + 8 * b) as usize > first_block);
    }
    assert_eq!(refs.len(), inode_count * 8);
    for number in 1..=inode_count {
        let r = u64_at(&refs, (number - 1) * 8);
        let (block, offset) = (r >> 16, (r & 0xffff) as usize);
        let at = inode_blocks[&block] + offset;
        assert_eq!(
            u32_at(&inodes, at + 12) as usize,
            number,
            "export entry {number}"
        );
    }
    // The root reference in the superblock points at the last inode, the root.
    let root = u64_at(&image, 32);
    let at = inode_blocks[&(root >> 16)] + (root & 0xffff) as usize;
    assert_eq!(u16_at(&inodes, at), 1, "the root is a basic directory");
    assert_eq!(u32_at(&inodes, at + 12) as usize, inode_count);
}
