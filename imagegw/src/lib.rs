//! shifter-rs image gateway: a Munge-authenticated REST service that pulls
//! registry images, converts them to squashfs through a pull engine, publishes
//! them atomically into each system's image directory and answers lookups.
//!
//! `api::app(state)` is the whole HTTP surface; outside services (Munge, the
//! store, the pull engine) sit behind traits in [`state::AppState`].

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod import;
pub mod jobs;
pub mod metrics;
mod munge;
pub mod openapi;
pub mod owners;
pub mod publish;
pub mod pull_engine;
pub mod state;
pub mod store;

#[cfg(test)]
mod testutil;

pub use api::app;
pub use state::AppState;
