//! Why a set of layers could not become a tree. Every variant names the layer and
//! the path concerned, because the message goes to the user who asked for the pull.

use std::io;

use super::path::PathProblem;
use super::sink::SinkError;

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("cannot open layer {layer}: {source}")]
    Open { layer: String, source: io::Error },
    /// The layer's download failed or was cancelled; the download's own error says why.
    #[error("layer {layer} was not downloaded")]
    NotDownloaded { layer: String },
    #[error("layer {layer} uses {what} compression; only gzip, zstd and uncompressed tar layers are supported")]
    UnsupportedCompression { layer: String, what: &'static str },
    #[error("layer {layer} is corrupt or truncated: {source}")]
    Corrupt { layer: String, source: io::Error },
    #[error("layer {layer}: entry {path:?} has {problem}; the image is refused")]
    BadPath {
        layer: String,
        path: String,
        problem: PathProblem,
    },
    #[error("layer {layer}: hardlink {path:?} points to {target:?}, which has {problem}; the image is refused")]
    BadLinkTarget {
        layer: String,
        path: String,
        target: String,
        problem: PathProblem,
    },
    #[error("layer {layer}: {path:?} would be reached through {through:?}, which is a {kind} and not a directory; entries through symlinks or files are refused (they could resolve outside the image)")]
    Traversal {
        layer: String,
        path: String,
        through: String,
        kind: &'static str,
    },
    #[error("layer {layer}: {path:?} occurs twice, first as a directory with contents and then as a {kind}; the image is refused")]
    Conflict {
        layer: String,
        path: String,
        kind: &'static str,
    },
    #[error("the layers decompress to more than {max} bytes (the site's limit); the image is too large or a decompression bomb")]
    TooLarge { max: u64 },
    #[error("the layers hold more than {max} entries (the site's limit)")]
    TooManyEntries { max: u64 },
    #[error("layer {layer} changed between the index and the data pass (entry {ordinal}); was the blob cache modified?")]
    Changed { layer: String, ordinal: u32 },
    #[error("cannot write {path:?} to the image: {source}")]
    Sink { path: String, source: SinkError },
}
