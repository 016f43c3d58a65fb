//! What the caller chooses: compression, block size, threads, and per-entry metadata.

use crate::Error;

/// libdeflate's level 7 already compresses squashfs blocks smaller than zlib's
/// level 9 (mksquashfs' and Shifter's default) at a third of the CPU of libdeflate's
/// own level 9, which gains another 0.3%: see docs/pull.md's benchmark.
pub const DEFAULT_GZIP_LEVEL: u32 = 7;

/// Block compressor. Levels follow squashfs-tools' ranges so `unsquashfs` accepts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zlib streams (squashfs "gzip"), level 1..=9; 9 is mksquashfs' and Shifter's default.
    Gzip { level: u32 },
    /// zstd frames, level 1..=22; mksquashfs' default is 15.
    Zstd { level: i32 },
    /// LZ4 block format ("legacy" in squashfs terms).
    Lz4,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Gzip {
            level: DEFAULT_GZIP_LEVEL,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub compression: Compression,
    /// Data block size in bytes: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// Compression threads; 0 means one per available core.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            compression: Compression::default(),
            block_size: 128 * 1024,
            threads: 0,
        }
    }
}

impl Options {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(4096..=1024 * 1024).contains(&bs) {
            return Err(Error::BadOption(format!(
                "block size {bs} must be a power of two between 4096 and 1048576"
            )));
        }
        match self.compression {
            Compression::Gzip { level } if !(1..=9).contains(&level) => Err(Error::BadOption(
                format!("gzip level {level} must be between 1 and 9"),
            )),
            Compression::Zstd { level } if !(1..=22).contains(&level) => Err(Error::BadOption(
                format!("zstd level {level} must be between 1 and 22"),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn thread_count(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Ownership, permissions and modification time of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky; no file type bits.
    pub mode: u16,
    /// Seconds since the epoch.
    pub mtime: u32,
}
