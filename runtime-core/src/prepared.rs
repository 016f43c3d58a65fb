//! The result of assembling a container root, shared by `setup` (which makes
//! it), `entry` and `sshd` (which enter it).

use std::path::PathBuf;

/// A container root ready to be entered, in the calling process's mount namespace.
#[derive(Debug, Clone)]
pub struct PreparedRoot {
    /// The assembled root, as a path in this mount namespace.
    pub root: PathBuf,
    /// The loop device holding the image (auto-cleared when unmounted).
    pub loop_device: PathBuf,
    /// Mount points made, in order (for diagnostics).
    pub mounts: Vec<PathBuf>,
}
