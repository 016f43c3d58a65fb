//! A streaming, reproducible squashfs 4.0 writer.
//!
//! Entries arrive in any order; file data is read once, cut into blocks and compressed
//! in parallel straight into the output, while the tree and all metadata tables stay in
//! memory until [`Writer::finish`] lays them out deterministically.
//!
//! Output layout and choices (see `docs/sqfs-writer.md`):
//! - data blocks and fragment blocks in the order the data arrived, then the inode,
//!   directory, fragment, export and id tables; no xattr table.
//! - Small files and the tails of large files share fragment blocks; a file identical
//!   to an earlier one shares its data; full blocks of zeros are holes.
//! - The superblock's time is the newest mtime in the image, never the clock.

mod compress;
mod dir;
mod error;
mod inode;
mod layout;
mod meta;
mod options;
mod path;
mod pipeline;
mod superblock;
mod tree;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};

use xxhash_rust::xxh3::Xxh3;

pub use error::{Error, PathBytes};
pub use options::{Compression, Meta, Options, DEFAULT_GZIP_LEVEL};

use pipeline::Pipeline;
use superblock::SUPERBLOCK_SIZE;
use tree::{Dir, FileData, FragRef, Kind, Node, NodeId, Tree};

/// Images are padded to this, as mksquashfs does, so block devices can read the end.
const PAD_TO: u64 = 4096;

/// What [`Writer::finish`] reports about the image it wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of the image including the padding to 4 KiB.
    pub image_bytes: u64,
    /// Bytes written to the output, at least `image_bytes`. More when blocks of a
    /// duplicate file near the end were taken back: the bytes past `image_bytes` are
    /// then zeros, and a caller writing to a file should truncate it to `image_bytes`.
    pub written_bytes: u64,
    pub inodes: u32,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Uncompressed bytes of file data added.
    pub data_bytes: u64,
    pub data_blocks: u64,
    pub fragment_blocks: u32,
    /// Full blocks of zeros stored as holes.
    pub sparse_blocks: u64,
    /// Files found identical to an earlier one, sharing its stored data.
    pub duplicate_files: u64,
}

/// Builds one squashfs image in `out`: add entries in any order, then [`Writer::finish`].
///
/// File data is compressed by `Options::threads` threads while the caller's thread
/// reads; at most a few blocks per thread are held in memory. Dropping a writer without
/// finishing stops its threads and leaves an incomplete image behind.
pub struct Writer<W: Write + Seek> {
    out: W,
    opts: Options,
    tree: Tree,
    pipeline: Pipeline,
    /// The fragment block being filled with small files and tails.
    fragment: Vec<u8>,
    fragment_jobs: Vec<u64>,
    /// Files already stored, by size and 128-bit XXH3 of their content. Not a
    /// cryptographic hash, on purpose: SHA-256 cost a fifth of the CPU time, and a
    /// crafted collision could only make an image's author confuse their own files.
    stored: HashMap<(u64, u128), NodeId>,
    /// The furthest byte ever written; a rewind for a duplicate file may leave stale
    /// bytes before it that `finish` overwrites.
    high_water: u64,
    poisoned: bool,
    stats: Stats,
}

impl<W: Write + Seek> Writer<W> {
    /// Starts an image at the beginning of `out`, which should be empty: the image is
    /// written from offset 0 and nothing beyond its end is truncated.
    pub fn new(mut out: W, opts: Options) -> Result<Self, Error> {
        opts.validate()?;
        let mut head = vec![0u8; SUPERBLOCK_SIZE as usize];
        if let Some(record) = compress::options_record(opts.compression) {
            // Stored as one uncompressed metadata block right after the superblock.
            head.extend_from_slice(&(record.len() as u16 | 0x8000).to_le_bytes());
            head.extend_from_slice(&record);
        }
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&head)?;
        let pipeline = Pipeline::new(
            opts.thread_count(),
            opts.compression,
            opts.block_size as usize,
            head.len() as u64,
        )?;
        Ok(Writer {
            out,
            opts,
            tree: Tree::new(),
            pipeline,
            fragment: Vec::new(),
            fragment_jobs: Vec::new(),
            stored: HashMap::new(),
            high_water: 0,
            poisoned: false,
            stats: Stats::default(),
        })
    }

    /// `path`: relative, '/'-separated bytes, no leading '/', no "." or ".." components;
    /// "" is the root directory. Any byte except '/' and NUL is allowed in names.
    /// Gives an implicitly created directory its real metadata.
    pub fn add_dir(&mut self, path: &[u8], meta: Meta) -> Result<(), Error> {
        self.usable()?;
        check_mode(path, meta)?;
        let comps = path::components(path)?;
        let dir = Kind::Dir(Dir {
            children: Default::default(),
            parent: tree::ROOT,
            explicit: true,
        });
        self.tree.insert(path, &comps, Node { meta, kind: dir })?;
        Ok(())
    }

    /// Streams `data` to its end into compressed blocks; returns the bytes read.
    /// After an error reading `data` or writing the image, the writer is unusable.
    pub fn add_file(&mut self, path: &[u8], meta: Meta, data: &mut dyn Read) -> Result<u64, Error> {
        self.usable()?;
        check_mode(path, meta)?;
        let comps = path::components(path)?;
        if comps.is_empty() {
            return Err(Error::BadPath {
                path: PathBytes::from(path),
                why: "the root must be a directory",
            });
        }
        let kind = Kind::File {
            data: FileData::default(),
            nlink: 1,
        };
        let id = self.tree.insert(path, &comps, Node { meta, kind })?;
        let stored = self.store(id, path, data);
        let stored = self.poison_on_error(stored)?;
        let size = stored.size;
        if let Kind::File { data, .. } = &mut self.tree.node_mut(id).kind {
            *data = stored;
        }
        self.stats.files += 1;
        self.stats.data_bytes += size;
        Ok(size)
    }

    /// Symlinks are stored with mode 0777 (as Linux shows them), whatever `meta.mode` says.
    pub fn add_symlink(&mut self, path: &[u8], meta: Meta, target: &[u8]) -> Result<(), Error> {
        self.usable()?;
        check_mode(path, meta)?;
        let comps = path::components(path)?;
        path::check_symlink_target(path, target)?;
        if comps.is_empty() {
            return Err(Error::BadPath {
                path: PathBytes::from(path),
                why: "the root must be a directory",
            });
        }
        let kind = Kind::Symlink(target.into());
        // Linux shows every symlink as 0777 whatever was asked for, so an image made
        // from an unpacked tree (mksquashfs) has 0777; match it.
        let meta = Meta {
            mode: 0o777,
            ..meta
        };
        self.tree.insert(path, &comps, Node { meta, kind })?;
        self.stats.symlinks += 1;
        Ok(())
    }

    /// `target` must be a regular file added earlier; both names share one inode, whose
    /// link count counts every name.
    pub fn add_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), Error> {
        self.usable()?;
        let comps = path::components(path)?;
        let target_comps = path::components(target)?;
        self.tree.hardlink(path, &comps, target, &target_comps)?;
        self.stats.hardlinks += 1;
        Ok(())
    }

    /// Writes the remaining fragment, all tables and the superblock; returns the output
    /// positioned at the end of the (4 KiB padded) image, `Stats::image_bytes`. See
    /// `Stats::written_bytes` for when the output should be truncated there.
    pub fn finish(mut self) -> Result<(W, Stats), Error> {
        self.usable()?;
        self.flush_fragment()?;
        let flushed = self.pipeline.flush(&mut self.out);
        self.poison_on_error(flushed)?;
        let table_start = self.pipeline.end();
        let tables = layout::build(
            &self.tree,
            self.pipeline.placed(),
            &self.fragment_jobs,
            &self.opts,
            table_start,
        )?;
        self.out.write_all(&tables.bytes)?;
        let used = tables.superblock.bytes_used;
        let padded = used.div_ceil(PAD_TO) * PAD_TO;
        // Zeros also over stale blocks of a duplicate file left past the end, so the
        // output never depends on anything but the calls made.
        let written = padded.max(self.high_water);
        self.out.write_all(&vec![0; (written - used) as usize])?;
        self.out.seek(SeekFrom::Start(0))?;
        self.out.write_all(&tables.superblock.to_bytes())?;
        self.out.seek(SeekFrom::Start(padded))?;
        self.out.flush()?;

        let mut stats = std::mem::take(&mut self.stats);
        stats.image_bytes = padded;
        stats.written_bytes = written;
        stats.inodes = tables.superblock.inode_count;
        stats.dirs = self
            .tree
            .nodes()
            .iter()
            .filter(|n| matches!(n.kind, Kind::Dir(_)))
            .count() as u64;
        stats.fragment_blocks = self.fragment_jobs.len() as u32;
        stats.sparse_blocks = self.pipeline.sparse_blocks;
        tracing::debug!(?stats, "squashfs image written");
        drop(self.pipeline);
        Ok((self.out, stats))
    }

    fn usable(&self) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    fn poison_on_error<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_err() {
            self.poisoned = true;
        }
        r
    }

    /// Cuts `data` into full blocks for the pipeline and keeps the tail for a fragment.
    /// A file identical to one stored earlier shares that file's blocks and fragment;
    /// its own blocks, already written, are taken back.
    fn store(&mut self, id: NodeId, path: &[u8], data: &mut dyn Read) -> Result<FileData, Error> {
        let bs = self.opts.block_size as usize;
        let mut hash = Xxh3::new();
        let mut stored = FileData::default();
        let tail = loop {
            let mut buf = self.pipeline.buffer();
            let n = data
                .take(bs as u64)
                .read_to_end(&mut buf)
                .map_err(|source| Error::Read {
                    path: PathBytes::from(path),
                    source,
                })?;
            stored.size += n as u64;
            hash.update(&buf);
            if n < bs {
                break buf;
            }
            let job = self.pipeline.submit(&mut self.out, buf, true)?;
            if stored.blocks == 0 {
                stored.first_job = job;
            }
            stored.blocks = stored
                .blocks
                .checked_add(1)
                .ok_or(Error::TooLarge("a file of more than 2^32 blocks"))?;
        };
        let stored = self.store_end(id, stored, hash, &tail);
        self.pipeline.recycle(tail);
        stored
    }

    /// Shares an earlier identical file's data, or puts the tail in a fragment.
    fn store_end(
        &mut self,
        id: NodeId,
        mut stored: FileData,
        hash: Xxh3,
        tail: &[u8],
    ) -> Result<FileData, Error> {
        if stored.size == 0 {
            return Ok(stored);
        }
        let key = (stored.size, hash.digest128());
        if let Some(&earlier) = self.stored.get(&key) {
            if stored.blocks > 0 {
                self.take_back(stored.first_job)?;
            }
            self.stats.duplicate_files += 1;
            if let Kind::File { data, .. } = &self.tree.nodes()[earlier as usize].kind {
                return Ok(data.clone());
            }
        }
        self.stats.data_blocks += u64::from(stored.blocks);
        if !tail.is_empty() {
            stored.fragment = Some(self.store_tail(tail)?);
        }
        self.stored.insert(key, id);
        Ok(stored)
    }

    /// Drops the blocks from job `first` on, which belong to the file being added.
    fn take_back(&mut self, first: u64) -> Result<(), Error> {
        self.pipeline.flush(&mut self.out)?;
        let (at, end) = self.pipeline.rewind(first);
        self.high_water = self.high_water.max(end);
        self.out.seek(SeekFrom::Start(at))?;
        Ok(())
    }

    fn store_tail(&mut self, tail: &[u8]) -> Result<FragRef, Error> {
        if self.fragment.len() + tail.len() > self.opts.block_size as usize {
            self.flush_fragment()?;
        }
        let at = FragRef {
            index: self.fragment_jobs.len() as u32,
            offset: self.fragment.len() as u32,
        };
        self.fragment.extend_from_slice(tail);
        Ok(at)
    }

    fn flush_fragment(&mut self) -> Result<(), Error> {
        if self.fragment.is_empty() {
            return Ok(());
        }
        let next = self.pipeline.buffer();
        let full = std::mem::replace(&mut self.fragment, next);
        let job = self.pipeline.submit(&mut self.out, full, false);
        let job = self.poison_on_error(job)?;
        self.fragment_jobs.push(job);
        Ok(())
    }
}

fn check_mode(path: &[u8], meta: Meta) -> Result<(), Error> {
    if meta.mode & !0o7777 != 0 {
        return Err(Error::BadMode {
            path: PathBytes::from(path),
            mode: meta.mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway runs conversions on blocking worker threads.
    #[test]
    fn writer_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Writer<std::fs::File>>();
        assert_send::<Error>();
    }
}
