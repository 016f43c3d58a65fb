//! Where the merged tree goes. The squashfs writer implements this through a thin
//! adapter; tests use [`RecordingSink`] to see exactly what the merger produced.

use std::collections::BTreeMap;
use std::io::Read;

/// Ownership, permissions and time of one entry, exactly as the tar header gave them
/// (after setuid/setgid stripping). `mode` holds permission bits only (`0o7777`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u16,
    pub mtime: u32,
}

impl Meta {
    /// Directories that no layer describes (parents of deeper entries) and the root
    /// when no layer has a `./` entry: what `umoci unpack` and `mkdir -p` as root give.
    pub const IMPLICIT_DIR: Meta = Meta {
        uid: 0,
        gid: 0,
        mode: 0o755,
        mtime: 0,
    };
}

/// The error type sinks return; the merger wraps it with the path concerned.
pub type SinkError = Box<dyn std::error::Error + Send + Sync>;

/// A consumer of a finished tree. Paths are relative, `/`-separated, without a
/// leading `/`; `""` is the root. Each path is given once; a directory may be given
/// after entries below it (it exists, implicitly, from the first of them).
/// Hardlinks are given after their targets.
pub trait TreeSink {
    /// Forgets everything given so far: the merge starts over.
    fn restart(&mut self) -> Result<(), SinkError>;
    fn add_dir(&mut self, path: &[u8], meta: Meta) -> Result<(), SinkError>;
    /// Returns the number of bytes read from `data`.
    fn add_file(&mut self, path: &[u8], meta: Meta, data: &mut dyn Read) -> Result<u64, SinkError>;
    fn add_symlink(&mut self, path: &[u8], meta: Meta, target: &[u8]) -> Result<(), SinkError>;
    fn add_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), SinkError>;
}

/// One entry as a [`RecordingSink`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Dir(Meta),
    File(Meta, Vec<u8>),
    Symlink(Meta, Vec<u8>),
    Hardlink(Vec<u8>),
}

/// Keeps everything in memory, keyed by path as a string, and refuses duplicates
/// like the real writer does.
#[derive(Debug, Default)]
pub struct RecordingSink {
    pub entries: BTreeMap<String, Recorded>,
    /// How often the merge started over.
    pub restarts: u32,
}

impl RecordingSink {
    fn put(&mut self, path: &[u8], r: Recorded) -> Result<(), SinkError> {
        let key = String::from_utf8_lossy(path).into_owned();
        if self.entries.insert(key.clone(), r).is_some() {
            return Err(format!("duplicate path {key:?}").into());
        }
        Ok(())
    }

    pub fn get(&self, path: &str) -> Option<&Recorded> {
        self.entries.get(path)
    }

    /// File content, following a recorded hardlink to its target.
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        match self.entries.get(path)? {
            Recorded::File(_, data) => Some(data),
            Recorded::Hardlink(t) => self.content(&String::from_utf8_lossy(t)),
            _ => None,
        }
    }

    pub fn paths(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }
}

impl TreeSink for RecordingSink {
    fn restart(&mut self) -> Result<(), SinkError> {
        self.entries.clear();
        self.restarts += 1;
        Ok(())
    }

    fn add_dir(&mut self, path: &[u8], meta: Meta) -> Result<(), SinkError> {
        self.put(path, Recorded::Dir(meta))
    }

    fn add_file(&mut self, path: &[u8], meta: Meta, data: &mut dyn Read) -> Result<u64, SinkError> {
        let mut buf = Vec::new();
        let n = data.read_to_end(&mut buf)? as u64;
        self.put(path, Recorded::File(meta, buf))?;
        Ok(n)
    }

    fn add_symlink(&mut self, path: &[u8], meta: Meta, target: &[u8]) -> Result<(), SinkError> {
        self.put(path, Recorded::Symlink(meta, target.to_vec()))
    }

    fn add_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<(), SinkError> {
        let key = String::from_utf8_lossy(target).into_owned();
        if !matches!(self.entries.get(&key), Some(Recorded::File(..))) {
            return Err(format!("hardlink target {key:?} is not a file added before").into());
        }
        self.put(path, Recorded::Hardlink(target.to_vec()))
    }
}
