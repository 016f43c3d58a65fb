//! Opening one layer blob as a tar stream: sniff the compression from the magic
//! bytes (media types lie, and Docker's "tar.gzip" layers are sometimes plain
//! tar), decompress, and charge every decompressed byte against the image's budget.

use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::error::MergeError;

/// A layer blob: a verified file in the blob cache, or bytes in memory (tests).
#[derive(Debug, Clone)]
pub enum LayerData {
    File(PathBuf),
    /// A blob still being downloaded: reading it waits until it is verified. It is
    /// then read by position from the open file, so the cache can evict its name
    /// meanwhile.
    Arriving(Arc<ArrivingBlob>),
    Bytes(Arc<[u8]>),
}

/// The merge's end of a blob still being downloaded. The merge reads layers newest
/// first, so it can start on the newest ones while older ones are still arriving.
#[derive(Debug)]
pub struct ArrivingBlob {
    size: u64,
    state: std::sync::Mutex<Arrival>,
    /// Set when the pull is given up: reads fail from then on, so a conversion
    /// still running stops at its next read instead of finishing for nobody.
    abandoned: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
enum Arrival {
    Waiting(std::sync::mpsc::Receiver<Arc<std::fs::File>>),
    Here(Arc<std::fs::File>),
    Lost,
}

/// The download's end: hands over the verified blob. Dropped without it (the
/// download failed or was cancelled), the merge's read fails at once.
#[derive(Debug)]
pub struct BlobDelivery(std::sync::mpsc::SyncSender<Arc<std::fs::File>>);

impl BlobDelivery {
    pub fn deliver(self, file: Arc<std::fs::File>) {
        // The merge may have ended (failed) already; nobody is left to tell.
        let _ = self.0.send(file);
    }
}

impl ArrivingBlob {
    /// A blob of `size` bytes (from its descriptor) and the handle to deliver it with.
    pub fn new(size: u64) -> (Arc<ArrivingBlob>, BlobDelivery) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let blob = ArrivingBlob {
            size,
            state: std::sync::Mutex::new(Arrival::Waiting(rx)),
            abandoned: std::sync::atomic::AtomicBool::new(false),
        };
        (Arc::new(blob), BlobDelivery(tx))
    }

    /// The pull is over without this conversion: its reads fail from now on.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }

    fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    fn wait(&self) -> io::Result<Arc<std::fs::File>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Arrival::Waiting(rx) = &*state {
            *state = match rx.recv() {
                Ok(f) => Arrival::Here(f),
                Err(_) => Arrival::Lost,
            };
        }
        match &*state {
            Arrival::Here(f) => Ok(Arc::clone(f)),
            _ => Err(io::Error::other(DownloadLost)),
        }
    }
}

/// Why reading an arriving blob failed: it never arrived, or its pull was given up.
#[derive(Debug)]
struct DownloadLost;

impl std::fmt::Display for DownloadLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("its download did not complete or the pull was given up")
    }
}

impl std::error::Error for DownloadLost {}

/// Whether `e` is, or wraps (the tar and decompression readers wrap what they
/// read), a read of a blob that never arrived or whose pull was given up.
pub(super) fn is_lost_download(e: &io::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|e| e as _);
    while let Some(err) = cur {
        if err.is::<DownloadLost>() {
            return true;
        }
        cur = match err.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|e| e as _),
            None => err.source(),
        };
    }
    false
}

/// A copy of a read error for reporting after the original went to a callee:
/// the message, and whether it was a lost download.
pub(super) fn copy_read_error(e: &io::Error) -> io::Error {
    if is_lost_download(e) {
        io::Error::other(DownloadLost)
    } else {
        io::Error::new(e.kind(), e.to_string())
    }
}

/// The merge error for a failed read of `layer`'s data: the layer is corrupt, or
/// it never arrived.
pub(super) fn read_failed(layer: &Layer, source: io::Error) -> MergeError {
    lost_or(layer, source, |layer, source| MergeError::Corrupt {
        layer,
        source,
    })
}

/// `NotDownloaded` when `source` is a lost download, else `other`'s error.
fn lost_or(
    layer: &Layer,
    source: io::Error,
    other: fn(String, io::Error) -> MergeError,
) -> MergeError {
    if is_lost_download(&source) {
        MergeError::NotDownloaded {
            layer: layer.name.clone(),
        }
    } else {
        other(layer.name.clone(), source)
    }
}

/// One layer to merge; `name` (usually the digest) appears in every error.
#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    pub data: LayerData,
}

impl Layer {
    pub fn from_file(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Layer {
            name: name.into(),
            data: LayerData::File(path.into()),
        }
    }

    pub fn from_bytes(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        Layer {
            name: name.into(),
            data: LayerData::Bytes(bytes.into()),
        }
    }

    /// Whether the pull this layer belongs to was given up (see [`ArrivingBlob::abandon`]).
    pub fn is_abandoned(&self) -> bool {
        matches!(&self.data, LayerData::Arriving(a) if a.is_abandoned())
    }

    /// Bytes of the blob as stored (compressed): what conversion progress counts.
    pub fn stored_len(&self) -> io::Result<u64> {
        Ok(match &self.data {
            LayerData::File(p) => std::fs::metadata(p)?.len(),
            LayerData::Arriving(a) => a.size,
            LayerData::Bytes(b) => b.len() as u64,
        })
    }

    fn open_raw(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(match &self.data {
            LayerData::File(p) => Box::new(std::fs::File::open(p)?),
            LayerData::Arriving(a) => Box::new(ArrivedReader {
                file: PositionalReader {
                    file: a.wait()?,
                    pos: 0,
                },
                blob: Arc::clone(a),
            }),
            LayerData::Bytes(b) => Box::new(io::Cursor::new(Arc::clone(b))),
        })
    }
}

/// Reads a shared file from the start with `pread`, independent of other readers.
struct PositionalReader {
    file: Arc<std::fs::File>,
    pos: u64,
}

impl Read for PositionalReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&*self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A delivered blob, readable until its pull is abandoned.
struct ArrivedReader {
    file: PositionalReader,
    blob: Arc<ArrivingBlob>,
}

impl Read for ArrivedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.blob.is_abandoned() {
            return Err(io::Error::other(DownloadLost));
        }
        self.file.read(buf)
    }
}

/// Decompressed bytes and entries, shared by all layers of one image so the caps
/// hold for the image as a whole, not per layer.
#[derive(Debug)]
pub struct Budget {
    bytes: AtomicU64,
    pub max_bytes: u64,
    entries: AtomicU64,
    pub max_entries: u64,
}

impl Budget {
    pub fn new(max_bytes: u64, max_entries: u64) -> Self {
        Budget {
            bytes: AtomicU64::new(0),
            max_bytes,
            entries: AtomicU64::new(0),
            max_entries,
        }
    }

    pub fn bytes_exceeded(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) > self.max_bytes
    }

    /// Charges `n` decompressed bytes; an error once the image is over the cap.
    pub fn charge(&self, n: u64) -> io::Result<()> {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if total > self.max_bytes {
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        Ok(())
    }

    pub fn take_entry(&self) -> Result<(), MergeError> {
        if self.entries.fetch_add(1, Ordering::Relaxed) >= self.max_entries {
            return Err(MergeError::TooManyEntries {
                max: self.max_entries,
            });
        }
        Ok(())
    }
}

/// Fails the read as soon as the image's decompressed total passes the cap, so a
/// bomb costs at most `max_bytes` of CPU, never memory or disk.
struct Metered<R> {
    inner: R,
    budget: Option<Arc<Budget>>,
    window: Option<HeaderWindow>,
}

/// Bytes the tar reader may still consume while looking for the next entry: that
/// is where it buffers PAX records and GNU long names in memory, unbounded, so a
/// hostile multi-gigabyte "file name" must be stopped here. `u64::MAX` = no limit
/// (while the caller reads entry data).
#[derive(Debug, Clone, Default)]
pub struct HeaderWindow(Arc<AtomicU64>);

/// PAX records and GNU long names of one entry; real ones are a few KiB.
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

impl HeaderWindow {
    pub fn open(&self) {
        self.0.store(MAX_HEADER_BYTES, Ordering::Relaxed);
    }

    pub fn close(&self) {
        self.0.store(u64::MAX, Ordering::Relaxed);
    }

    fn charge(&self, n: u64) -> io::Result<()> {
        let left = self.0.load(Ordering::Relaxed);
        if left == u64::MAX {
            return Ok(());
        }
        if n > left {
            return Err(io::Error::other(format!(
                "tar extension headers (PAX records or GNU long names) larger than {MAX_HEADER_BYTES} bytes"
            )));
        }
        self.0.store(left - n, Ordering::Relaxed);
        Ok(())
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(w) = &self.window {
            w.charge(n as u64)?;
        }
        if let Some(b) = &self.budget {
            b.charge(n as u64)?;
        }
        Ok(n)
    }
}

/// Stored (compressed) bytes read so far, shared by every layer reader of one
/// conversion so progress can be reported from wherever the merge is.
#[derive(Debug, Clone, Default)]
pub struct ReadCounter(Arc<AtomicU64>);

impl ReadCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

struct Counted<R> {
    inner: R,
    counter: ReadCounter,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// What reading one layer is charged to: the image's budget (the first full read of
/// each layer), the header window (while the tar reader looks for the next entry)
/// and the progress counter.
#[derive(Debug, Clone, Default)]
pub struct Meters {
    pub budget: Option<Arc<Budget>>,
    pub window: Option<HeaderWindow>,
    pub read: Option<ReadCounter>,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// The layer as an uncompressed tar stream, read through `meters`. A second read of
/// the same verified bytes (the two-pass fallback's data pass) is not charged to
/// the budget again.
pub fn open_tar(layer: &Layer, meters: Meters) -> Result<Box<dyn Read + Send>, MergeError> {
    let open_err = |source| {
        lost_or(layer, source, |layer, source| MergeError::Open {
            layer,
            source,
        })
    };
    let raw = layer.open_raw().map_err(open_err)?;
    let raw: Box<dyn Read + Send> = match meters.read {
        Some(counter) => Box::new(Counted {
            inner: raw,
            counter,
        }),
        None => raw,
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    let head = buffered.fill_buf().map_err(open_err)?;
    let unsupported = |what| MergeError::UnsupportedCompression {
        layer: layer.name.clone(),
        what,
    };
    let tar: Box<dyn Read + Send> = if head.starts_with(GZIP_MAGIC) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(ZSTD_MAGIC) {
        let d = zstd::stream::read::Decoder::with_buffer(buffered)
            .map_err(|source| read_failed(layer, source))?;
        Box::new(d)
    } else if head.starts_with(b"BZh") {
        return Err(unsupported("bzip2"));
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(unsupported("xz"));
    } else {
        Box::new(buffered)
    };
    // The tar reader asks for 512-byte headers; a decoder called with buffers that
    // small spends more time starting and stopping than inflating.
    Ok(Box::new(Metered {
        inner: BufReader::with_capacity(128 * 1024, tar),
        budget: meters.budget,
        window: meters.window,
    }))
}
