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

type ImageWriter = sqfs_writer::Writer<std::io::BufWriter<File>>;

/// The squashfs writer on the temporary file; it can start the image over.
struct WriterSink {
    writer: Option<ImageWriter>,
    file: File,
    opts: sqfs_writer::Options,
}

impl WriterSink {
    fn new(file: File, opts: sqfs_writer::Options) -> Result<Self, sqfs_writer::Error> {
        let writer = Self::start(&file, opts)?;
        Ok(WriterSink {
            writer: Some(writer),
            file,
            opts,
        })
    }

    fn start(file: &File, opts: sqfs_writer::Options) -> Result<ImageWriter, sqfs_writer::Error> {
        let out = file.try_clone()?;
        sqfs_writer::Writer::new(std::io::BufWriter::with_capacity(1 << 20, out), opts)
    }

    fn writer(&mut self) -> Result<&mut ImageWriter, SinkError> {
        self.writer
            .as_mut()
            .ok_or_else(|| "the image could not be started over".into())
    }
}

fn meta(m: Meta) -> sqfs_writer::Meta {
    sqfs_writer::Meta {
        uid: m.uid,
        gid: m.gid,
        mode: m.mode,
        mtime: m.mtime,
    }
}

impl TreeSink for WriterSink {
    fn restart(&mut self) -> Result<(), SinkError> {
        // The old writer (and its compression threads) must be gone before the file
        // is emptied: dropping it flushes what it buffered.
        self.writer = None;
        self.file.set_len(0)?;
        self.writer = Some(Self::start(&self.file, self.opts)?);
        Ok(())
    }
    fn add_dir(&mut self, path: &[u8], m: Meta) -> Result<(), SinkError> {
        Ok(self.writer()?.add_dir(path, meta(m))?)
    }
    fn add_file(&mut self, path: &[u8], m: Meta, data: &mut dyn Read) -> Result<u64, SinkError> {
        Ok(self.writer()?.add_file(path, meta(m), data)?)
    }
    fn add_symlink(&mut self, path: &[u8], m: Meta, target: &[u8]) -> Result<(), SinkError> {
        Ok(self.writer()?.add_symlink(path, meta(m), target)?)
    }
    fn add_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), SinkError> {
        Ok(self.writer()?.add_hardlink(path, target)?)
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
    let mut sink = WriterSink::new(file, writer_options(opts.compression, opts.block_size))?;
    let stats = merge::merge_layers(layers, &opts.merge, &mut sink, progress)?;
    let writer = sink.writer.take().ok_or_else(|| ConvertError::Io {
        op: "restart",
        path: tmp.path().to_owned(),
        source: std::io::Error::other("the image could not be started over"),
    })?;
    let (out, wstats) = writer.finish()?;
    let file: File = out
        .into_inner()
        .map_err(|e| io("write", tmp.path())(e.into_error()))?;
    // The writer may have written past the image's end (a duplicate file's data is
    // rewound over); cut the file to the image.
    file.set_len(wstats.image_bytes)
        .map_err(io("truncate", tmp.path()))?;
    file.sync_all().map_err(io("fsync", tmp.path()))?;
    // A pull given up while the tables were written must not publish after all.
    if let Some(l) = layers.iter().find(|l| l.is_abandoned()) {
        return Err(merge::MergeError::NotDownloaded {
            layer: l.name.clone(),
        }
        .into());
    }
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
    use crate::test_tar as tar_of;

    fn layer_with(name: &str) -> Layer {
        Layer::from_bytes("layer0", tar_of(&[(name, b"hi")]))
    }

    #[test]
    fn starting_over_leaves_nothing_of_the_first_attempt_in_the_image() {
        // Enough incompressible data before the repeat that whole blocks were
        // written (and compressed) before the merge had to start over.
        let mut noise = vec![0u8; 3 << 20];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let layers = [
            Layer::from_bytes("base", tar_of(&[("etc/motd", b"base")])),
            Layer::from_bytes(
                "top",
                tar_of(&[("x", b"first"), ("noise", &noise), ("x", b"second")]),
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("img.squashfs");
        let (size, stats) = convert_to_file(&layers, &opts(), &dest, &mut |_| {}).unwrap();
        assert_eq!(stats.passes, 2, "the repeated path forces the fallback");

        let reference = dir.path().join("reference");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&reference)
            .unwrap();
        let mut sink = WriterSink::new(file, writer_options(Compression::Lz4, 128 * 1024)).unwrap();
        merge::merge_layers_in_two_passes(
            &layers,
            &MergeOptions::default(),
            &mut sink,
            &mut |_| {},
        )
        .unwrap();
        let (out, wstats) = sink.writer.take().unwrap().finish().unwrap();
        let file = out.into_inner().unwrap();
        file.set_len(wstats.image_bytes).unwrap();
        assert_eq!(size, wstats.image_bytes);
        assert!(
            std::fs::read(&dest).unwrap() == std::fs::read(&reference).unwrap(),
            "the image differs from a conversion that never started over"
        );
        assert_eq!(
            leftovers(dir.path()),
            Vec::<String>::new(),
            "no temporary file remains"
        );
    }

    #[test]
    fn a_conversion_given_up_after_its_last_read_publishes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        std::fs::write(&blob, tar_of(&[("etc/motd", b"hi")])).unwrap();
        let (arriving, delivery) =
            merge::ArrivingBlob::new(std::fs::metadata(&blob).unwrap().len());
        delivery.deliver(std::sync::Arc::new(File::open(&blob).unwrap()));
        let layers = [Layer {
            name: "only".into(),
            data: merge::LayerData::Arriving(std::sync::Arc::clone(&arriving)),
        }];
        let dest = dir.path().join("img.squashfs");
        // The last progress report comes after the last read: give up there.
        let e = convert_to_file(&layers, &opts(), &dest, &mut |p| {
            if p.total > 0 && p.read == p.total {
                arriving.abandon();
            }
        })
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConvertError::Merge(merge::MergeError::NotDownloaded { .. })
            ),
            "{e}"
        );
        assert!(!dest.exists());
        assert!(leftovers(dir.path()).is_empty());
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
