//! Declaring a plugin: the symbols Slurm looks up, and the callbacks.
//!
//! [`spank_plugin!`](crate::spank_plugin) generates the exported `plugin_*`
//! data and one `extern "C"` function per callback, each of which runs the
//! matching [`Plugin`] method under [`guard`]. The plugin crate itself needs no
//! `unsafe` and no `#[no_mangle]`.

use std::error::Error;
use std::ffi::{c_char, c_int};

use crate::callback::guard;
use crate::ffi;
use crate::handle::{args_from_raw, Spank};

pub type BoxError = Box<dyn Error + Send + Sync>;

/// One method per SPANK callback; each defaults to doing nothing. `args` are the
/// plugstack.conf arguments after the plugin path.
pub trait Plugin {
    fn init(_spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        Ok(())
    }
    fn init_post_opt(_spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        Ok(())
    }
    fn local_user_init(_spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        Ok(())
    }
    fn task_init_privileged(_spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        Ok(())
    }
    fn task_init(_spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        Ok(())
    }
    fn exit(_spank: &Spank, _args: &[String]) -> Result<(), BoxError> {
        Ok(())
    }
}

/// Runs one callback for the generated `extern "C"` functions. Not for direct use.
///
/// Safe to call only with the arguments of a running SPANK callback; it is not
/// an `unsafe fn` so that the plugin crate, which denies `unsafe_code`, can
/// expand [`spank_plugin!`](crate::spank_plugin) without an `unsafe` block.
#[doc(hidden)]
#[allow(clippy::not_unsafe_ptr_arg_deref)]
pub fn __run(
    name: &str,
    raw: ffi::spank_t,
    argc: c_int,
    argv: *mut *mut c_char,
    f: fn(&Spank, &[String]) -> Result<(), BoxError>,
) -> c_int {
    guard(name, || {
        // SAFETY: called only from the generated callbacks, with the handle and
        // arguments Slurm passed to the callback that is running.
        let spank = unsafe { Spank::from_raw(raw) };
        // SAFETY: as above; Slurm's argv holds argc strings.
        let args = unsafe { args_from_raw(argc, argv) };
        f(&spank, &args)
    })
}

/// Exports a SPANK plugin named `$name` (a byte string literal ending in `\0`)
/// implemented by `$plugin: Plugin`.
///
/// `plugin_version` is the Slurm version the crate was built against, which
/// Slurm requires to match its own major.minor.
#[macro_export]
macro_rules! spank_plugin {
    ($name:literal, $plugin:ty) => {
        #[no_mangle]
        pub static plugin_name: [u8; $name.len()] = *$name;
        #[no_mangle]
        pub static plugin_type: [u8; 6] = *b"spank\0";
        #[no_mangle]
        pub static plugin_version: u32 = $crate::SLURM_VERSION_NUMBER;
        #[no_mangle]
        pub static spank_plugin_version: u32 = 1;

        $crate::__spank_callback!(slurm_spank_init, init, $plugin);
        $crate::__spank_callback!(slurm_spank_init_post_opt, init_post_opt, $plugin);
        $crate::__spank_callback!(slurm_spank_local_user_init, local_user_init, $plugin);
        $crate::__spank_callback!(
            slurm_spank_task_init_privileged,
            task_init_privileged,
            $plugin
        );
        $crate::__spank_callback!(slurm_spank_task_init, task_init, $plugin);
        $crate::__spank_callback!(slurm_spank_exit, exit, $plugin);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __spank_callback {
    ($sym:ident, $method:ident, $plugin:ty) => {
        #[no_mangle]
        pub extern "C" fn $sym(
            sp: $crate::ffi::spank_t,
            ac: ::std::ffi::c_int,
            av: *mut *mut ::std::ffi::c_char,
        ) -> ::std::ffi::c_int {
            $crate::__run(
                stringify!($method),
                sp,
                ac,
                av,
                <$plugin as $crate::Plugin>::$method,
            )
        }
    };
}
