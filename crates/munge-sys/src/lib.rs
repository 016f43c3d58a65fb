//! libmunge for shifter-rs: raw bindings generated from `<munge.h>` in [`ffi`],
//! and a safe API ([`encode`], [`decode`]) that the gateway uses to authenticate
//! requests and the CLIs and the Slurm plugin use to sign them.
//!
//! Every call creates its own libmunge context, so the functions may be called
//! from many threads at once.

#![allow(unsafe_code)]

mod cred;
mod error;
pub mod ffi;
#[cfg(feature = "test-utils")]
pub mod testing;

pub use cred::{decode, encode, encode_with, Decoded, EncodeOptions, DEFAULT_SOCKET};
pub use error::MungeError;
