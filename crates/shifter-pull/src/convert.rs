//! Layers → squashfs file: the merger feeding `sqfs-writer`, into a temporary file
//! in the destination directory that is fsynced and then renamed, so a reader
//! never sees a partial image.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::config::Compression;
use crate::merge::{self, Layer, MergeOptions, MergeStats, Meta, SinkError, TreeSink};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Merge(#[from] merge::MergeError),
    #[error("squashfs writer: {0}")]
    Writer(#[from] sqfs_writer::Error),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a conversion settles: compression and block size of the image.
#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    pub merge: MergeOptions,
    pub compression: Compression,
    pub block_size: u32,
}

struct WriterSink<W: std::io::Write + std::io::Seek>(sqfs_writer::Writer<W>);

fn meta(m: Meta) -> sqfs_writer::Meta {
    sqfs_writer::Meta {
        uid: m.uid,
        gid: m.gid,
        mode: m.mode,
        mtime: m.mtime,
    }
}

impl<W: std::io::Write + std::io::Seek> TreeSink for WriterSink<W> {
    fn add_dir(&mut self, path: &[u8], m: Meta) -> Result<(), SinkError> {
        Ok(self.0.add_dir(path, meta(m))?)
    }
    fn add_file(&mut self, path: &[u8], m: Meta, data: &mut dyn Read) -> Result<u64, SinkError> {
        Ok(self.0.add_file(path, meta(m), data)?)
    }
    fn add_symlink(&mut self, path: &[u8], m: Meta, target: &[u8]) -> Result<(), SinkError> {
        Ok(self.0.add_symlink(path, meta(m), target)?)
    }
    fn add_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), SinkError> {
        Ok(self.0.add_hardlink(path, target)?)
    }
}

pub fn writer_options(c: Compression, block_size: u32) -> sqfs_writer::Options {
    sqfs_writer::Options {
        compression: match c {
            Compression::Gzip { level } => sqfs_writer::Compression::Gzip { level },
            Compression::Zstd { level } => sqfs_writer::Compression::Zstd { level },
            Compression::Lz4 => sqfs_writer::Compression::Lz4,
        },
        block_size,
        threads: 0,
    }
}

/// Converts `layers` (base first) into `dest`, atomically. Returns the image size.
pub fn convert_to_file(
    layers: &[Layer],
    opts: &ConvertOptions,
    dest: &Path,
    progress: &mut dyn FnMut(merge::DataProgress),
) -> Result<(u64, MergeStats), ConvertError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ConvertError::Io { op, path, source }
    };
    let tmp = tempfile::Builder::new()
        .prefix(".shifter-pull-")
        .suffix(".squashfs.tmp")
        .tempfile_in(dir)
        .map_err(io("create temporary file in", dir))?;
    let file = tmp.reopen().map_err(io("open", tmp.path()))?;
    let writer = sqfs_writer::Writer::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        writer_options(opts.compression, opts.block_size),
    )?;
    let mut sink = WriterSink(writer);
    let stats = merge::merge_layers(layers, &opts.merge, &mut sink, progress)?;
    let (out, wstats) = sink.0.finish()?;
    let file: File = out
        .into_inner()
        .map_err(|e| io("write", tmp.path())(e.into_error()))?;
    // The writer may have written past the image's end (a duplicate file's data is
    // rewound over); cut the file to the image.
    file.set_len(wstats.image_bytes)
        .map_err(io("truncate", tmp.path()))?;
    file.sync_all().map_err(io("fsync", tmp.path()))?;
    set_mode(tmp.path(), 0o644).map_err(io("chmod", tmp.path()))?;
    tmp.persist(dest)
        .map_err(|e| io("rename to", dest)(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    Ok((wstats.image_bytes, stats))
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::error::{ErrorKind, PullError};

    fn layer_with(name: &str) -> Layer {
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h, name, &b"hi"[..]).unwrap();
        Layer::from_bytes("layer0", b.into_inner().unwrap())
    }

    fn opts() -> ConvertOptions {
        ConvertOptions {
            merge: MergeOptions::default(),
            compression: Compression::Lz4,
            block_size: 128 * 1024,
        }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn converted_image_appears_whole_world_readable_and_nothing_else_remains() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("img.squashfs");
        let (size, stats) =
            convert_to_file(&[layer_with("etc/motd")], &opts(), &dest, &mut |_| {}).unwrap();
        let md = std::fs::metadata(&dest).unwrap();
        assert_eq!(md.len(), size);
        assert_eq!(size % 4096, 0);
        assert_eq!(md.permissions().mode() & 0o777, 0o644);
        assert_eq!(stats.files, 1);
        assert!(leftovers(dir.path()).is_empty());
        assert_eq!(
            &std::fs::read(&dest).unwrap()[..4],
            b"hsqs",
            "a squashfs superblock"
        );
    }

    #[test]
    fn a_name_squashfs_cannot_hold_is_the_image_fault_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("img.squashfs");
        let long = format!("etc/{}", "n".repeat(300));
        let e = convert_to_file(&[layer_with(&long)], &opts(), &dest, &mut |_| {}).unwrap_err();
        assert_eq!(PullError::from(e).kind(), ErrorKind::Rejected);
        assert!(!dest.exists());
        assert!(leftovers(dir.path()).is_empty());
    }
}
