//! One read of one layer: every tar header, classified here (whiteout, opaque
//! marker, device to drop…) so the merge works on plain data. File data is offered
//! to a callback and never kept.

use std::io::Read;
use std::ops::ControlFlow;
use std::sync::Arc;

use tar::EntryType;
use tracing::{debug, warn};

use super::error::MergeError;
use super::layer::{
    copy_read_error, open_tar, read_failed, Budget, HeaderWindow, Layer, Meters, ReadCounter,
};
use super::path::{join, lossy, normalize, split_parent};
use super::sink::Meta;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawKind {
    Dir,
    File,
    /// Target stored verbatim: it is resolved inside the container at run time.
    Symlink(Vec<u8>),
    /// Normalised path of the link target.
    Hardlink(Vec<u8>),
    /// `path` is the whited-out path, hidden (with everything below) in older layers.
    Whiteout,
    /// `path` is a directory whose older contents are hidden.
    Opaque,
}

#[derive(Debug, Clone)]
pub struct RawEntry {
    pub path: Vec<u8>,
    pub kind: RawKind,
    pub meta: Meta,
    /// Position of the entry in the layer's tar stream, to find its data again.
    pub ordinal: u32,
}

/// Whether the scan goes on after an entry.
pub type Flow = ControlFlow<()>;

/// Called for every classified entry with its data, before the scan drains what the
/// callee did not read.
pub type OnEntry<'a> = dyn FnMut(&RawEntry, &mut dyn Read) -> Result<Flow, MergeError> + 'a;

/// Options that shape the tree.
#[derive(Debug, Clone, Copy)]
pub struct MergeOptions {
    /// Keep setuid/setgid bits on files (off by default: the runtime is safe either
    /// way, but an image has no business carrying privilege-raising bits).
    pub keep_setuid: bool,
    /// Cap on the decompressed bytes of all layers together.
    pub max_bytes: u64,
    /// Cap on tar entries of all layers together.
    pub max_entries: u64,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            keep_setuid: false,
            max_bytes: 64 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// Reads every entry of `layer`, checking names and charging the budget, hands each
/// to `on_entry` with its data, and reads the stream to its end so gzip/zstd trailers
/// and truncation are checked. When `on_entry` breaks, the entries so far are
/// returned and the rest of the layer is left unread.
pub fn scan_layer(
    layer: &Layer,
    budget: &Arc<Budget>,
    read: Option<ReadCounter>,
    opts: &MergeOptions,
    on_entry: &mut OnEntry<'_>,
) -> Result<Vec<RawEntry>, MergeError> {
    let corrupt = |source: std::io::Error| {
        if budget.bytes_exceeded() {
            MergeError::TooLarge {
                max: budget.max_bytes,
            }
        } else {
            read_failed(layer, source)
        }
    };
    let window = HeaderWindow::default();
    let meters = Meters {
        budget: Some(Arc::clone(budget)),
        window: Some(window.clone()),
        read,
    };
    let mut archive = tar::Archive::new(open_tar(layer, meters)?);
    let mut out = Vec::new();
    let mut entries = archive.entries().map_err(corrupt)?.enumerate();
    loop {
        // Only headers are read while looking for the next entry: the previous
        // entry's data was drained below, outside the window.
        window.open();
        let Some((ordinal, entry)) = entries.next() else {
            break;
        };
        window.close();
        let mut entry = entry.map_err(corrupt)?;
        budget.take_entry()?;
        let ordinal = u32::try_from(ordinal).map_err(|_| MergeError::TooManyEntries {
            max: budget.max_entries,
        })?;
        let classified = classify(layer, &mut entry, ordinal, opts).map_err(|e| match e {
            Classify::Io(e) => corrupt(e),
            Classify::Refused(e) => e,
        })?;
        // The holes of a sparse entry are made up by the tar reader, not read from
        // the layer, so the decompression meter never sees them: charge them here.
        let sparse = entry.header().entry_type() == EntryType::GNUSparse;
        let mut data = Tracked {
            inner: &mut entry,
            error: None,
            budget: sparse.then_some(&**budget),
        };
        let Some(raw) = classified else {
            std::io::copy(&mut data, &mut std::io::sink()).map_err(corrupt)?;
            continue;
        };
        let flow = on_entry(&raw, &mut data);
        // A read error inside the callee is the layer's fault, not the callee's.
        let flow = match (flow, data.error.take()) {
            (Err(_), Some(io)) => return Err(corrupt(io)),
            (flow, _) => flow?,
        };
        out.push(raw);
        if flow.is_break() {
            return Ok(out);
        }
        std::io::copy(&mut data, &mut std::io::sink()).map_err(corrupt)?;
    }
    drop(entries);
    // Bytes after the end-of-archive marker are padding, not extension headers.
    window.close();
    // The tar end marker may come before the compressed stream's end: read on, so a
    // truncated or corrupt gzip/zstd trailer is noticed and trailing bytes are charged.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(corrupt)?;
    Ok(out)
}

/// Remembers a read error so it can be told apart from the callee's own failures;
/// with `budget`, charges what is read to it.
struct Tracked<'r, R> {
    inner: &'r mut R,
    error: Option<std::io::Error>,
    budget: Option<&'r Budget>,
}

impl<R: Read> Read for Tracked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .and_then(|n| match self.budget {
                Some(b) => b.charge(n as u64).map(|()| n),
                None => Ok(n),
            })
            .inspect_err(|e| {
                self.error.get_or_insert_with(|| copy_read_error(e));
            })?;
        Ok(n)
    }
}

enum Classify {
    Io(std::io::Error),
    Refused(MergeError),
}

impl From<MergeError> for Classify {
    fn from(e: MergeError) -> Self {
        Classify::Refused(e)
    }
}

/// The merge's view of one tar entry, or `None` for entries images cannot carry
/// (devices, fifos, aufs bookkeeping…), which are dropped with a log line.
fn classify<R: Read>(
    layer: &Layer,
    entry: &mut tar::Entry<'_, R>,
    ordinal: u32,
    opts: &MergeOptions,
) -> Result<Option<RawEntry>, Classify> {
    let raw_path = entry.path_bytes().into_owned();
    let bad_path = |problem| MergeError::BadPath {
        layer: layer.name.clone(),
        path: lossy(&raw_path),
        problem,
    };
    let path = normalize(&raw_path).map_err(bad_path)?;
    let meta = read_meta(entry).map_err(Classify::Io)?;
    let et = entry.header().entry_type();
    let (parent, name) = split_parent(&path);

    if name.starts_with(WHITEOUT_PREFIX) {
        if name == OPAQUE_MARKER {
            return Ok(Some(RawEntry {
                path: parent.to_vec(),
                kind: RawKind::Opaque,
                meta,
                ordinal,
            }));
        }
        if name.starts_with(b".wh..wh.") {
            // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): not part of the tree.
            debug!(layer = %layer.name, path = %lossy(&path), "skipping aufs metadata");
            return Ok(None);
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        let hidden = normalize(hidden)
            .ok()
            .filter(|h| !h.is_empty() && !h.contains(&b'/'))
            .ok_or_else(|| bad_path(super::path::PathProblem::DotDot))?;
        return Ok(Some(RawEntry {
            path: join(parent, &hidden),
            kind: RawKind::Whiteout,
            meta,
            ordinal,
        }));
    }

    let kind = match et {
        EntryType::Directory => RawKind::Dir,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => RawKind::File,
        EntryType::Symlink => {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            if target.is_empty() {
                warn!(layer = %layer.name, path = %lossy(&path), "dropping symlink with an empty target");
                return Ok(None);
            }
            RawKind::Symlink(target)
        }
        EntryType::Link => {
            let raw_target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let bad_target = |problem| MergeError::BadLinkTarget {
                layer: layer.name.clone(),
                path: lossy(&path),
                target: lossy(&raw_target),
                problem,
            };
            let target = normalize(&raw_target).map_err(bad_target)?;
            if target.is_empty() {
                return Err(bad_target(super::path::PathProblem::DotDot).into());
            }
            RawKind::Hardlink(target)
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            warn!(layer = %layer.name, path = %lossy(&path), kind = ?et, "dropping device node or fifo: images cannot carry them");
            return Ok(None);
        }
        EntryType::XGlobalHeader => return Ok(None),
        other => {
            warn!(layer = %layer.name, path = %lossy(&path), kind = ?other, "dropping tar entry of unsupported type");
            return Ok(None);
        }
    };
    if path.is_empty() && kind != RawKind::Dir {
        warn!(layer = %layer.name, "dropping a non-directory entry for the image root");
        return Ok(None);
    }
    let meta = if kind != RawKind::Dir && meta.mode & 0o6000 != 0 && !opts.keep_setuid {
        debug!(layer = %layer.name, path = %lossy(&path), mode = format_args!("{:o}", meta.mode), "stripping setuid/setgid");
        Meta {
            mode: meta.mode & !0o6000,
            ..meta
        }
    } else {
        meta
    };
    Ok(Some(RawEntry {
        path,
        kind,
        meta,
        ordinal,
    }))
}

/// uid/gid/mode/mtime from the header, with PAX `mtime` honoured (the tar crate
/// already applies PAX uid/gid). PAX `SCHILY.xattr.*` and friends are never looked at.
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<Meta> {
    let h = entry.header();
    let id = |v: u64, what: &str| {
        u32::try_from(v)
            .map_err(|_| std::io::Error::other(format!("{what} {v} does not fit in 32 bits")))
    };
    let uid = id(h.uid()?, "uid")?;
    let gid = id(h.gid()?, "gid")?;
    let mode = (h.mode()? & 0o7777) as u16;
    let mut mtime = h.mtime().unwrap_or(0) as i128;
    if let Some(pax) = entry.pax_extensions()? {
        for ext in pax.flatten() {
            if ext.key_bytes() == b"mtime" {
                if let Some(secs) = ext
                    .value()
                    .ok()
                    .and_then(|v| v.split('.').next())
                    .and_then(|s| s.parse::<i128>().ok())
                {
                    mtime = secs;
                }
            }
        }
    }
    Ok(Meta {
        uid,
        gid,
        mode,
        mtime: mtime.clamp(0, u32::MAX as i128) as u32,
    })
}
