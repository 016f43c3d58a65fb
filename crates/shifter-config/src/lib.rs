//! Imports a NERSC Shifter site's configuration into shifter-rs:
//! `udiRoot.conf` into `shifter.toml` ([`udiroot`]) and `imagemanager.json`
//! into `imagegw.toml` ([`imagemanager`]). The output is always checked with
//! the parser that will read it, so an import either yields a file the
//! runtime/gateway accepts or fails naming the offending keys.

pub mod cli;
pub mod imagemanager;
pub mod keyvalue;
pub mod report;
pub mod udiroot;

pub use report::{Ignored, ImportError, Imported, Refusal};
