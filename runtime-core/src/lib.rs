//! Prepares and enters a container root built from a squashfs image, on one node.
//!
//! # For callers (the Slurm plugin, `shifter`)
//!
//! ```no_run
//! use runtime_core::{config::Config, image, setup, entry, sys::real::RealSys, user::UserInfo, volume::Volume};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sys = RealSys;
//! let cfg = Config::load(std::path::Path::new(runtime_core::DEFAULT_CONFIG_PATH))?;
//! let user = UserInfo::lookup(1001)?;
//! let id = shifter_api::ImageId::parse(&"a".repeat(64))?;
//! // 1. Once per step, as root, single-threaded (slurmstepd: init_post_opt /
//! //    first task_init_privileged). Unshares the mount namespace itself.
//! let img = image::check_image(&cfg, &id, &user)?;
//! let volumes = Volume::parse_all(&["/scratch/alice:/data:ro"])?;
//! let modules = cfg.resolve_modules(None)?;
//! let root = setup::prepare(&sys, &cfg, &img, &user, &setup::Request { volumes: &volumes, modules: &modules, sshd: None })?;
//! // 2. Per task, as root in the task's process: chroot, bounding set, no_new_privs.
//! entry::enter(&sys, &root)?;
//! // 3. Slurm drops to the user itself; `shifter` does it here, with read-back.
//! entry::drop_to_user(&sys, &user)?;
//! // 4. Environment and working directory for exec.
//! let env = runtime_core::env::container_env(&std::env::vars().collect(), &img.meta().env, &modules, &cfg, id.as_str(), "docker:busybox");
//! # let _ = env; Ok(()) }
//! ```
//!
//! Nothing here spawns threads or uses async; `prepare` forks briefly to open
//! user volume sources with the user's credentials. Every raw syscall goes
//! through [`sys::Sys`]; enable the `test-utils` feature for the recording
//! fake [`sys::fake::FakeSys`].

pub mod config;
pub mod entry;
pub mod env;
pub mod etc;
pub mod image;
pub mod per_node_cache;
pub mod prepared;
pub mod setup;
pub mod sshd;
pub mod sys;
pub mod trust;
pub mod user;
pub mod volume;

pub use config::{
    Config, ConfigError, ExtraUser, Module, PerNodeCacheConfig, SiteMount, TmpMode,
    DEFAULT_CONFIG_PATH,
};
pub use entry::{drop_to_user, enter, EntryError};
pub use image::{check_image, CheckedImage, ImageError};
pub use prepared::PreparedRoot;
pub use setup::{prepare, Request, SetupError};
pub use user::{UserError, UserInfo};
pub use volume::{Volume, VolumeError};

/// Any error of the runtime, for callers that want one type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    User(#[from] UserError),
}
