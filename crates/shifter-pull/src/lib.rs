//! Pulling images from Docker/OCI registries and converting them to squashfs.
//!
//! - [`Puller`]: the entry point for the gateway (`resolve`, `pull_into`, `pull_to`).
//! - [`registry`]: the v2/OCI client (auth, retries, verification).
//! - [`cache`]: the content-addressed, verified blob cache.
//! - [`merge`]: layers → one tree (whiteouts, hostile-input rules), streamed into a
//!   [`merge::TreeSink`] without unpacking anything to disk.
//! - [`convert`]: the merger feeding `sqfs-writer`, published atomically.

pub mod cache;
pub mod config;
pub mod convert;
pub mod digest;
mod error;
pub mod merge;
pub mod meta;
mod puller;
pub mod registry;

pub use config::{
    Compression, Credentials, Limits, Platform, PullConfig, PullOptions, RegistryConfig,
};
pub use error::{ErrorKind, PullError};
pub use puller::{write_meta, Progress, ProgressFn, PulledImage, Puller, Resolved};

/// Tars for unit tests: regular files, 0644, root-owned, time 0.
#[cfg(test)]
pub(crate) fn test_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}
