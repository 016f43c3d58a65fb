//! Talking to Docker/OCI registries. Hand-written on reqwest rather than built on
//! `oci-client`: we need per-registry CA and plain-http settings, retries, a
//! streaming download into a verified cache, and our own digest checks of every
//! manifest and blob, which that crate either lacks or does differently.
//! Document types come from `oci-spec`.

mod challenge;
mod client;
mod error;
pub mod manifest;
pub mod policy;

pub use client::{
    http_client, FetchedManifest, RepoClient, Retry, MANIFEST_ACCEPT, MAX_CONFIG_BYTES,
};
pub use error::RegistryError;
pub use policy::{AddressPolicy, Refusal};
