//! The SPANK plugin Slurm loads through plugstack.conf (`libshifter_spank.so`).
//!
//! One small dispatcher per callback, by context: srun/sbatch/salloc validate
//! and resolve ([`local`]), slurmstepd prepares and enters the container
//! ([`remote`]), every other context does nothing.

mod args;
mod container;
mod error;
mod local;
mod options;
mod pyxis;
mod remote;
mod request;
mod resolve;
mod slurm_log;
mod state;
mod timing;
mod volume;

use spank_sys::{BoxError, Context, Plugin, Spank};

pub use args::{ArgsError, PluginArgs};
pub use request::{RawOptions, Request, RequestError};
pub use volume::VolumeError;

struct Shifter;

spank_sys::spank_plugin!(b"shifter\0", Shifter);

impl Plugin for Shifter {
    fn init(spank: &Spank, args: &[String]) -> Result<(), BoxError> {
        slurm_log::install();
        let parsed = PluginArgs::parse(args)?;
        state::lock().reset(parsed);
        match Context::current() {
            Context::Local | Context::Remote | Context::Allocator => options::register(spank)?,
            _ => {}
        }
        Ok(())
    }

    fn init_post_opt(spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        match Context::current() {
            Context::Local | Context::Allocator => local::init_post_opt(spank)?,
            Context::Remote => remote::init_post_opt(spank)?,
            _ => {}
        }
        Ok(())
    }

    fn local_user_init(spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        Ok(local::local_user_init(spank)?)
    }

    fn task_init_privileged(spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        Ok(remote::task_init_privileged(spank)?)
    }

    fn task_init(spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        Ok(remote::task_init(spank)?)
    }

    fn exit(_spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        if Context::current() == Context::Remote {
            remote::exit();
        }
        Ok(())
    }
}
