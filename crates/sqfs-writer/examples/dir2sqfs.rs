//! Packs a directory tree into a squashfs image with sqfs-writer (for benchmarks and
//! manual checks): `dir2sqfs SRC OUT [gzip[:LEVEL]|zstd[:LEVEL]|lz4] [BLOCK_SIZE] [THREADS]`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::BufWriter;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sqfs_writer::{Compression, Meta, Options, Writer};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        return Err(
            "usage: dir2sqfs SRC OUT [gzip[:L]|zstd[:L]|lz4] [BLOCK_SIZE] [THREADS]".into(),
        );
    }
    let compression = match args.get(3).map(String::as_str).unwrap_or("gzip") {
        "lz4" => Compression::Lz4,
        c => match c.split_once(':') {
            Some(("gzip", l)) => Compression::Gzip { level: l.parse()? },
            Some(("zstd", l)) => Compression::Zstd { level: l.parse()? },
            None if c == "gzip" => Compression::Gzip {
                level: sqfs_writer::DEFAULT_GZIP_LEVEL,
            },
            None if c == "zstd" => Compression::Zstd { level: 15 },
            _ => return Err(format!("unknown compression {c}").into()),
        },
    };
    let opts = Options {
        compression,
        block_size: args.get(4).map_or(Ok(131072), |s| s.parse())?,
        threads: args.get(5).map_or(Ok(0), |s| s.parse())?,
    };
    let out = BufWriter::with_capacity(1 << 20, File::create(&args[2])?);
    let mut w = Writer::new(out, opts)?;
    let mut seen = HashMap::new();
    add(&mut w, Path::new(&args[1]), b"", &mut seen)?;
    let (_, stats) = w.finish()?;
    eprintln!("{stats:?}");
    Ok(())
}

fn meta(m: &fs::Metadata) -> Meta {
    Meta {
        uid: m.uid(),
        gid: m.gid(),
        mode: (m.mode() & 0o7777) as u16,
        mtime: m.mtime().clamp(0, u32::MAX.into()) as u32,
    }
}

fn add(
    w: &mut Writer<BufWriter<File>>,
    dir: &Path,
    rel: &[u8],
    seen: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<()> {
    w.add_dir(rel, meta(&fs::symlink_metadata(dir)?))?;
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let m = fs::symlink_metadata(&path)?;
        let mut name = rel.to_vec();
        if !name.is_empty() {
            name.push(b'/');
        }
        name.extend_from_slice(e.file_name().as_bytes());
        let ft = m.file_type();
        if ft.is_dir() {
            add(w, &path, &name, seen)?;
        } else if ft.is_symlink() {
            w.add_symlink(
                &name,
                meta(&m),
                fs::read_link(&path)?.as_os_str().as_bytes(),
            )?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = seen.get(&(m.dev(), m.ino())) {
                    w.add_hardlink(&name, first)?;
                    continue;
                }
                seen.insert((m.dev(), m.ino()), name.clone());
            }
            w.add_file(&name, meta(&m), &mut File::open(&path)?)?;
        }
    }
    Ok(())
}
