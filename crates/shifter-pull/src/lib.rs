//! Pulling images from Docker/OCI registries and converting them to squashfs.
//!
//! - [`merge`]: layers → one tree (whiteouts, hostile-input rules), streamed into a
//!   [`merge::TreeSink`] without unpacking anything to disk.

pub mod merge;
