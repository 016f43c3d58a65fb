//! The plugin's error type: every message says what to change.

use thiserror::Error;

use crate::args::ArgsError;
use crate::request::RequestError;
use crate::resolve::ResolveError;

#[derive(Debug, Error)]
pub enum PluginError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error("shifter: {0}")]
    Config(#[from] runtime_core::ConfigError),
    #[error("shifter: {0}")]
    Request(#[from] RequestError),
    #[error("shifter: {0}")]
    Resolve(#[from] ResolveError),
    #[error("shifter: {0}")]
    Volume(#[from] crate::volume::VolumeError),
    #[error("shifter: {0}")]
    Alias(#[from] crate::pyxis::AliasError),
    #[error("shifter: {0}")]
    Spank(#[from] spank_sys::SpankError),
    #[error("shifter: image {request:?} reached the node without being resolved at submit: use srun/sbatch/salloc --image=REF")]
    NotPinned { request: String },
    #[error("shifter: {0}")]
    Container(#[from] crate::container::ContainerError),
    #[error("shifter: on node {node}: {message}")]
    OnNode { node: String, message: String },
}
