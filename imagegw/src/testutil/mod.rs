//! Helpers for this crate's tests.

pub mod postgres;
