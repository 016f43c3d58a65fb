//! The command-line definition of `shifter`, a library so that the man page
//! and shell completions (crates/shifter-docs) are generated from the same
//! definition the binary parses with.

pub mod cli;
