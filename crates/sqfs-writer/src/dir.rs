//! Directory listings: runs of entries behind headers, plus the index that lets the
//! kernel jump into large directories.

use crate::compress::Compressor;
use crate::inode::{put16, put32, IndexEntry};
use crate::meta::{MetaPos, MetaWriter, METADATA_SIZE};

/// The kernel refuses headers announcing more entries than this.
const MAX_PER_HEADER: usize = 256;
const HEADER_SIZE: u64 = 12;
const ENTRY_SIZE: u64 = 8;

/// One child as its parent's listing needs it.
pub(crate) struct Entry<'a> {
    pub name: &'a [u8],
    pub inode_ref: u64,
    pub number: u32,
    pub kind: u16,
}

pub(crate) struct Listing<'a> {
    pub start: MetaPos,
    /// Bytes of headers and entries (the inode's file_size is this plus 3).
    pub len: u32,
    pub index: Vec<IndexEntry<'a>>,
}

/// Appends the listing of `entries` (sorted by name) to the directory table.
///
/// A new header starts when the inode block changes, when the inode number is out of
/// reach of the 16-bit delta, after 256 entries, and at the first entry of each new
/// metadata block: the latter makes every block reachable through the index.
pub(crate) fn write<'a>(
    w: &mut MetaWriter,
    comp: &mut Compressor,
    entries: &[Entry<'a>],
) -> Listing<'a> {
    let start = w.pos();
    let base = w.len();
    let mut index = Vec::new();
    let mut indexed_block = base / METADATA_SIZE as u64;
    let mut buf = Vec::with_capacity(HEADER_SIZE as usize + 64);
    for run in runs(base, entries) {
        let first = &entries[run.start];
        let header_at = w.len();
        if header_at / METADATA_SIZE as u64 != indexed_block {
            indexed_block = header_at / METADATA_SIZE as u64;
            index.push(IndexEntry {
                index: (header_at - base) as u32,
                start_block: w.pos().block,
                name: first.name,
            });
        }
        buf.clear();
        put32(&mut buf, (run.len() - 1) as u32);
        put32(&mut buf, (first.inode_ref >> 16) as u32);
        put32(&mut buf, first.number);
        for e in &entries[run] {
            put16(&mut buf, e.inode_ref as u16);
            put16(
                &mut buf,
                (e.number as i64 - first.number as i64) as i16 as u16,
            );
            put16(&mut buf, e.kind);
            put16(&mut buf, (e.name.len() - 1) as u16);
            buf.extend_from_slice(e.name);
        }
        w.write(&buf, comp);
    }
    Listing {
        start,
        len: (w.len() - base) as u32,
        index,
    }
}

/// Splits entries into header runs, given the listing starts at uncompressed offset `base`.
fn runs(base: u64, entries: &[Entry<'_>]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut pos = base;
    let mut header_block = 0;
    for (i, e) in entries.iter().enumerate() {
        let fits = runs.last().is_some_and(|r| {
            let first = &entries[r.start];
            let delta = e.number as i64 - first.number as i64;
            r.len() < MAX_PER_HEADER
                && first.inode_ref >> 16 == e.inode_ref >> 16
                && i16::try_from(delta).is_ok()
                && pos / METADATA_SIZE as u64 == header_block
        });
        if fits {
            if let Some(r) = runs.last_mut() {
                r.end = i + 1;
            }
        } else {
            header_block = pos / METADATA_SIZE as u64;
            runs.push(i..i + 1);
            pos += HEADER_SIZE;
        }
        pos += ENTRY_SIZE + e.name.len() as u64;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("{i:0len$}").into_bytes()).collect()
    }

    fn entries(names: &[Vec<u8>], same_block: bool) -> Vec<Entry<'_>> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Entry {
                name: n,
                inode_ref: if same_block {
                    i as u64 * 32
                } else {
                    ((i as u64) << 16) | 5
                },
                number: 10 + i as u32,
                kind: 2,
            })
            .collect()
    }

    #[test]
    fn one_header_covers_up_to_256_entries_in_one_inode_block() {
        let n = names(300, 4);
        let e = entries(&n, true);
        let r = runs(0, &e);
        assert_eq!(r, vec![0..256, 256..300]);
    }

    #[test]
    fn a_new_inode_block_starts_a_new_header() {
        let n = names(3, 4);
        assert_eq!(runs(0, &entries(&n, false)).len(), 3);
    }

    #[test]
    fn far_inode_numbers_start_a_new_header() {
        let n = names(2, 4);
        let mut e = entries(&n, true);
        e[1].number = e[0].number + 40000;
        assert_eq!(runs(0, &e).len(), 2);
    }

    #[test]
    fn large_listing_gets_an_index_entry_per_metadata_block() {
        let mut c = Compressor::new(crate::Compression::Lz4).unwrap();
        let mut w = MetaWriter::new();
        w.write(&[7; 100], &mut c);
        let n = names(2000, 20);
        let e = entries(&n, true);
        let l = write(&mut w, &mut c, &e);
        assert_eq!(l.start.offset, 100);
        let blocks = (100 + l.len as usize).div_ceil(METADATA_SIZE);
        assert_eq!(l.index.len(), blocks - 1);
        for ix in &l.index {
            let at = 100 + ix.index as usize;
            assert!(
                at % METADATA_SIZE < 8 + 28,
                "header near the start of its block"
            );
        }
        let mut sorted = l.index.iter().map(|i| i.name).collect::<Vec<_>>();
        sorted.sort();
        assert_eq!(sorted, l.index.iter().map(|i| i.name).collect::<Vec<_>>());
    }
}
