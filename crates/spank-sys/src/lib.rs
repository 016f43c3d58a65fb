//! Bindings to Slurm's SPANK plugin interface.
//!
//! [`ffi`] is the raw bindgen output over the installed `<slurm/spank.h>`; the
//! rest is a thin safe layer: a [`Spank`] handle with typed item getters and
//! job-environment access, option registration with a Rust handler, logging
//! through Slurm's own log functions, and [`guard`], which runs a callback body
//! so that neither a panic nor an error ever unwinds into C.
//!
//! Nothing here starts a thread: task callbacks run in forked children of
//! slurmstepd, where a second thread would not survive the fork.
#![allow(unsafe_code)]

pub mod ffi;

mod callback;
mod error;
mod handle;
pub mod log;
mod option;
mod plugin;

pub use callback::{error_chain, guard};
pub use error::SpankError;
pub use handle::{args_from_raw, Context, Spank, BATCH_STEP_ID, EXTERN_STEP_ID};
pub use option::{OptionHandler, OptionSpec};
pub use plugin::{__run, BoxError, Plugin};

/// The Slurm version the plugin was built against, as Slurm encodes it
/// (`0xMMmmuu`). Slurm refuses a plugin whose major.minor differs from its own.
pub const SLURM_VERSION_NUMBER: u32 = ffi::SLURM_VERSION_NUMBER;
