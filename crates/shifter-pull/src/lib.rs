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
