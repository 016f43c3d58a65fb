//! The writer's error type.

use std::fmt;

/// A path as given by the caller, shown lossily in messages.
#[derive(Clone, PartialEq, Eq)]
pub struct PathBytes(pub Vec<u8>);

impl fmt::Display for PathBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        write!(f, "/{}", self.0.escape_ascii())
    }
}

impl fmt::Debug for PathBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl From<&[u8]> for PathBytes {
    fn from(p: &[u8]) -> Self {
        PathBytes(p.to_vec())
    }
}

/// Why the writer refused an entry or failed. Path errors leave the writer usable;
/// `Read` and `Io` errors make every later call return `Poisoned`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path} was already added to the image")]
    Duplicate { path: PathBytes },
    #[error("cannot add below {path}: it is not a directory in the image")]
    NotADirectory { path: PathBytes },
    #[error("cannot add {path}: a directory with entries already exists there")]
    IsADirectory { path: PathBytes },
    #[error("bad path {path}: {why}")]
    BadPath { path: PathBytes, why: &'static str },
    #[error("bad symlink target for {path}: {why}")]
    BadSymlink { path: PathBytes, why: &'static str },
    #[error("cannot hardlink {path} to {target}: {why}")]
    BadHardlink {
        path: PathBytes,
        target: PathBytes,
        why: &'static str,
    },
    #[error("bad mode {mode:#o} for {path}: only permission bits (0o7777) are allowed")]
    BadMode { path: PathBytes, mode: u16 },
    #[error("bad writer option: {0}")]
    BadOption(String),
    #[error("image too large: {0}")]
    TooLarge(&'static str),
    #[error("the writer failed earlier and cannot be used any more")]
    Poisoned,
    #[error("i/o error writing the image: {0}")]
    Io(#[from] std::io::Error),
    #[error("i/o error reading the data of {path}: {source}")]
    Read {
        path: PathBytes,
        #[source]
        source: std::io::Error,
    },
}
