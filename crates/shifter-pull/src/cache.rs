//! The content-addressed blob cache shared by all pulls: `blobs/sha256/<hex>`.
//! A blob enters only after its digest was checked, is checked again whenever it is
//! reused (a cache on a shared filesystem can rot or be tampered with), and the
//! cache is trimmed oldest-first (by last use) to a size cap.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};
use tracing::{debug, info, warn};

use crate::digest::Sha256Digest;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct BlobCache {
    blobs: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
}

/// A verified blob, held open so trimming the cache cannot pull it away mid-use.
#[derive(Debug, Clone)]
pub struct CachedBlob {
    pub path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
}

impl BlobCache {
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, CacheError> {
        let blobs = dir.join("blobs").join("sha256");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&blobs).map_err(io_err("create", &blobs))?;
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        Ok(BlobCache {
            blobs,
            tmp,
            max_bytes,
        })
    }

    pub fn path(&self, digest: &Sha256Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// The blob if it is cached and still matches its digest (and size, when given).
    /// A blob that does not is removed. Marks the blob as just used.
    pub fn lookup(
        &self,
        digest: &Sha256Digest,
        size: Option<u64>,
    ) -> Result<Option<CachedBlob>, CacheError> {
        let path = self.path(digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io_err("read", &path))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buf[..n]);
        }
        let actual = Sha256Digest::from_hasher(hasher);
        if &actual != digest || size.is_some_and(|s| s != total) {
            warn!(path = %path.display(), %actual, "cached blob does not match its digest; discarding it");
            let _ = fs::remove_file(&path);
            return Ok(None);
        }
        let _ = file.set_modified(SystemTime::now());
        debug!(%digest, "blob cache hit");
        Ok(Some(CachedBlob {
            path,
            file: Arc::new(file),
            size: total,
        }))
    }

    /// A temporary file to download into; see [`BlobWriter::commit`].
    pub fn writer(&self) -> Result<BlobWriter, CacheError> {
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.tmp)
            .map_err(io_err("create temporary file in", &self.tmp))?;
        Ok(BlobWriter {
            out: io::BufWriter::with_capacity(1 << 20, tmp),
            dest_dir: self.blobs.clone(),
        })
    }

    /// Removes the least recently used blobs until the cache fits its cap, never
    /// touching `keep` (blobs of pulls in progress).
    pub fn trim(&self, keep: &HashSet<String>) -> Result<u64, CacheError> {
        let mut blobs = Vec::new();
        let mut total = 0u64;
        for e in fs::read_dir(&self.blobs)
            .map_err(io_err("list", &self.blobs))?
            .flatten()
        {
            let Ok(md) = e.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            total += md.len();
            let name = e.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                blobs.push((
                    md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    md.len(),
                    e.path(),
                ));
            }
        }
        blobs.sort();
        let mut freed = 0;
        for (_, len, path) in blobs {
            if total <= self.max_bytes {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                info!(path = %path.display(), bytes = len, "evicted blob from the cache");
                total -= len;
                freed += len;
            }
        }
        Ok(freed)
    }
}

/// A download in progress. Dropped without [`commit`](BlobWriter::commit), it leaves
/// nothing behind.
pub struct BlobWriter {
    out: io::BufWriter<tempfile::NamedTempFile>,
    dest_dir: PathBuf,
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), CacheError> {
        let path = self.out.get_ref().path().to_owned();
        self.out.write_all(bytes).map_err(io_err("write", &path))
    }

    /// Publishes the (already verified) content under its digest.
    pub fn commit(self, digest: &Sha256Digest) -> Result<CachedBlob, CacheError> {
        let dest = self.dest_dir.join(digest.hex());
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| io_err("write", &dest)(e.into_error()))?;
        let file = tmp
            .persist(&dest)
            .map_err(|e| io_err("rename into", &dest)(e.error))?;
        // Keep the handle that wrote the data (read by position later): a concurrent
        // trim may remove the name at any moment, never the data of a blob in use.
        let size = file.metadata().map_err(io_err("stat", &dest))?.len();
        Ok(CachedBlob {
            path: dest,
            file: Arc::new(file),
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(c: &BlobCache, data: &[u8]) -> Sha256Digest {
        let d = Sha256Digest::of(data);
        let mut w = c.writer().unwrap();
        w.write(data).unwrap();
        w.commit(&d).unwrap();
        d
    }

    #[test]
    fn committed_blob_is_found_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path(), 1 << 20).unwrap();
        let d = put(&c, b"hello");
        let b = c.lookup(&d, Some(5)).unwrap().expect("cached");
        assert_eq!(b.size, 5);
        assert!(
            c.lookup(&d, Some(6)).unwrap().is_none(),
            "size mismatch is a miss"
        );
    }

    #[test]
    fn tampered_blob_is_discarded_on_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path(), 1 << 20).unwrap();
        let d = put(&c, b"good");
        fs::write(c.path(&d), b"evil").unwrap();
        assert!(c.lookup(&d, None).unwrap().is_none());
        assert!(!c.path(&d).exists(), "the rotten blob is removed");
    }

    #[test]
    fn uncommitted_download_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path(), 1 << 20).unwrap();
        let mut w = c.writer().unwrap();
        w.write(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(
            fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn trim_evicts_least_recently_used_first_and_spares_kept_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let c = BlobCache::open(dir.path(), 10).unwrap();
        let old = put(&c, b"0123456789");
        let kept = put(&c, b"abcdefghij");
        let new = put(&c, b"ABCDEFGHIJ");
        let t = |secs| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        for (d, s) in [(&old, 100), (&kept, 50), (&new, 200)] {
            File::options()
                .write(true)
                .open(c.path(d))
                .unwrap()
                .set_modified(t(s))
                .unwrap();
        }
        let keep: HashSet<String> = [kept.hex().to_owned()].into();
        assert_eq!(c.trim(&keep).unwrap(), 20);
        assert!(!c.path(&old).exists() && !c.path(&new).exists());
        assert!(c.path(&kept).exists());
    }
}
