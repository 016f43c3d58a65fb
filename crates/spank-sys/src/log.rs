//! Slurm's log functions, called with a fixed `"%s"` format so that nothing in
//! a message (a path with a `%`, a user's option value) is read as a format.
//!
//! Where the line ends up depends on the process: srun and sbatch print errors
//! on the user's terminal; slurmstepd writes to the slurmd log.

use std::ffi::{c_char, CString};

use crate::ffi;

fn c(msg: &str) -> CString {
    // An interior NUL would truncate the message; show it instead of losing the rest.
    CString::new(msg.replace('\0', "\\0")).expect("NULs were replaced")
}

const FMT: *const c_char = c"%s".as_ptr();

pub fn error(msg: &str) {
    let m = c(msg);
    // SAFETY: "%s" consumes exactly one NUL-terminated string argument.
    unsafe { ffi::slurm_error(FMT, m.as_ptr()) }
}

pub fn info(msg: &str) {
    let m = c(msg);
    // SAFETY: "%s" consumes exactly one NUL-terminated string argument.
    unsafe { ffi::slurm_info(FMT, m.as_ptr()) }
}

pub fn verbose(msg: &str) {
    let m = c(msg);
    // SAFETY: "%s" consumes exactly one NUL-terminated string argument.
    unsafe { ffi::slurm_verbose(FMT, m.as_ptr()) }
}

pub fn debug(msg: &str) {
    let m = c(msg);
    // SAFETY: "%s" consumes exactly one NUL-terminated string argument.
    unsafe { ffi::slurm_debug(FMT, m.as_ptr()) }
}

pub fn debug2(msg: &str) {
    let m = c(msg);
    // SAFETY: "%s" consumes exactly one NUL-terminated string argument.
    unsafe { ffi::slurm_debug2(FMT, m.as_ptr()) }
}

/// At error level but without the `error: ` prefix: for messages meant for
/// the user's terminal.
pub fn user(msg: &str) {
    let m = c(msg);
    // SAFETY: "%s" consumes exactly one NUL-terminated string argument.
    unsafe { ffi::slurm_spank_log(FMT, m.as_ptr()) }
}
