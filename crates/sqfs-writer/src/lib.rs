//! A streaming, reproducible squashfs 4.0 writer.
//!
//! Entries arrive in any order; file data is read once, cut into blocks and compressed
//! in parallel straight into the output, while the tree and all metadata tables stay in
//! memory until [`Writer::finish`] lays them out deterministically.

mod error;
mod options;

use std::io::{Read, Seek, Write};

pub use error::{Error, PathBytes};
pub use options::{Compression, Meta, Options};

/// What [`Writer::finish`] reports about the image it wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of the image including the padding to 4 KiB.
    pub image_bytes: u64,
    pub inodes: u32,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Uncompressed bytes of file data added.
    pub data_bytes: u64,
    pub data_blocks: u64,
    pub fragment_blocks: u32,
    /// Full blocks of zeros stored as holes.
    pub sparse_blocks: u64,
    /// Files whose data was found identical to an earlier file and shared.
    pub duplicate_files: u64,
}

pub struct Writer<W: Write + Seek> {
    out: W,
    opts: Options,
}

impl<W: Write + Seek> Writer<W> {
    pub fn new(out: W, opts: Options) -> Result<Self, Error> {
        opts.validate()?;
        Ok(Writer { out, opts })
    }

    /// `path`: relative, '/'-separated bytes, no leading '/', no "." or ".." components;
    /// "" is the root directory. Any byte except '/' and NUL is allowed in names.
    pub fn add_dir(&mut self, path: &[u8], meta: Meta) -> Result<(), Error> {
        let _ = (path, meta);
        Err(Error::BadOption("not implemented yet".into()))
    }

    /// Streams `data` into compressed blocks; returns the number of bytes read.
    pub fn add_file(&mut self, path: &[u8], meta: Meta, data: &mut dyn Read) -> Result<u64, Error> {
        let _ = (path, meta, data);
        Err(Error::BadOption("not implemented yet".into()))
    }

    pub fn add_symlink(&mut self, path: &[u8], meta: Meta, target: &[u8]) -> Result<(), Error> {
        let _ = (path, meta, target);
        Err(Error::BadOption("not implemented yet".into()))
    }

    /// `target` must be a regular file added earlier; both names share one inode.
    pub fn add_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), Error> {
        let _ = (path, target);
        Err(Error::BadOption("not implemented yet".into()))
    }

    pub fn finish(self) -> Result<(W, Stats), Error> {
        let _ = self.opts;
        Ok((self.out, Stats::default()))
    }
}
