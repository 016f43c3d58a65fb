//! Metadata blocks: tables cut into 8 KiB pieces, each compressed on its own behind a
//! two-byte header (length, bit 15 = stored uncompressed).

use crate::compress::Compressor;

pub(crate) const METADATA_SIZE: usize = 8192;
const UNCOMPRESSED: u16 = 0x8000;

pub(crate) struct MetaWriter {
    block: Vec<u8>,
    out: Vec<u8>,
    /// Where each finished block starts in `out`.
    block_starts: Vec<u32>,
    scratch: Vec<u8>,
}

/// A position in a metadata table: the block's offset from the table start and the
/// byte offset inside the uncompressed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetaPos {
    pub block: u32,
    pub offset: u16,
}

impl MetaPos {
    /// The 48-bit inode reference squashfs uses.
    pub fn reference(self) -> u64 {
        (u64::from(self.block) << 16) | u64::from(self.offset)
    }
}

impl MetaWriter {
    pub fn new() -> Self {
        MetaWriter {
            block: Vec::with_capacity(METADATA_SIZE),
            out: Vec::new(),
            block_starts: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Where the next byte written will land. Blocks are flushed as soon as they fill,
    /// so the current block's compressed start is always known.
    pub fn pos(&self) -> MetaPos {
        MetaPos {
            block: self.out.len() as u32,
            offset: self.block.len() as u16,
        }
    }

    /// Total uncompressed bytes written so far.
    pub fn len(&self) -> u64 {
        (self.block_starts.len() * METADATA_SIZE + self.block.len()) as u64
    }

    pub fn write(&mut self, mut bytes: &[u8], comp: &mut Compressor) {
        while !bytes.is_empty() {
            let n = bytes.len().min(METADATA_SIZE - self.block.len());
            self.block.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.block.len() == METADATA_SIZE {
                self.flush(comp);
            }
        }
    }

    fn flush(&mut self, comp: &mut Compressor) {
        self.block_starts.push(self.out.len() as u32);
        if comp.compress(&self.block, &mut self.scratch) {
            self.out
                .extend_from_slice(&(self.scratch.len() as u16).to_le_bytes());
            self.out.extend_from_slice(&self.scratch);
        } else {
            let header = self.block.len() as u16 | UNCOMPRESSED;
            self.out.extend_from_slice(&header.to_le_bytes());
            self.out.extend_from_slice(&self.block);
        }
        self.block.clear();
    }

    /// Flushes the last partial block; returns the table bytes and each block's start.
    pub fn finish(mut self, comp: &mut Compressor) -> (Vec<u8>, Vec<u32>) {
        if !self.block.is_empty() {
            self.flush(comp);
        }
        (self.out, self.block_starts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Compression;

    fn read_back(table: &[u8]) -> Vec<u8> {
        let mut d = libdeflater::Decompressor::new();
        let (mut p, mut all) = (0, Vec::new());
        while p < table.len() {
            let h = u16::from_le_bytes([table[p], table[p + 1]]);
            let n = (h & 0x7fff) as usize;
            let body = &table[p + 2..p + 2 + n];
            if h & UNCOMPRESSED != 0 {
                all.extend_from_slice(body);
            } else {
                let mut out = vec![0; METADATA_SIZE];
                let m = d.zlib_decompress(body, &mut out).unwrap();
                all.extend_from_slice(&out[..m]);
            }
            p += 2 + n;
        }
        all
    }

    #[test]
    fn tables_split_into_8k_blocks_and_positions_point_into_them() {
        let mut c = Compressor::new(Compression::Gzip { level: 9 }).unwrap();
        let mut w = MetaWriter::new();
        let data: Vec<u8> = (0..20000u32).map(|i| (i / 7) as u8).collect();
        w.write(&data[..8000], &mut c);
        assert_eq!(
            w.pos(),
            MetaPos {
                block: 0,
                offset: 8000
            }
        );
        w.write(&data[8000..], &mut c);
        let pos = w.pos();
        assert_eq!(pos.offset as usize, 20000 - 2 * METADATA_SIZE);
        assert_eq!(w.len(), 20000);
        let (table, starts) = w.finish(&mut c);
        assert_eq!(starts.len(), 3);
        assert_eq!(starts[2], pos.block);
        assert_eq!(read_back(&table), data);
    }

    #[test]
    fn incompressible_blocks_are_stored_with_the_uncompressed_bit() {
        let mut c = Compressor::new(Compression::Gzip { level: 9 }).unwrap();
        let mut w = MetaWriter::new();
        let mut x = 88172645463325252u64;
        let data: Vec<u8> = (0..100)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        w.write(&data, &mut c);
        let (table, _) = w.finish(&mut c);
        assert_eq!(u16::from_le_bytes([table[0], table[1]]), 100 | UNCOMPRESSED);
        assert_eq!(read_back(&table), data);
    }
}
