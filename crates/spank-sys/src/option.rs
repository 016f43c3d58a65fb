//! Options registered with `spank_option_register`, which (unlike a static
//! `spank_options` table) also works in sbatch and salloc.
//!
//! Slurm's option callback carries only an integer, so each registered option
//! gets its index in a process-wide table as that integer, and one trampoline
//! dispatches to the Rust handler.

use std::error::Error;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::Mutex;

use crate::callback::guard;
use crate::error::SpankError;
use crate::ffi;
use crate::handle::Spank;

/// Called for each occurrence of an option: with the value, and whether Slurm
/// is replaying it on the node (`remote`) rather than parsing the command line.
pub type OptionHandler =
    fn(name: &str, value: Option<&str>, remote: bool) -> Result<(), Box<dyn Error + Send + Sync>>;

/// What `--help` shows for an option and whether it takes a value.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub name: &'static str,
    /// One word naming the value (`REF`), or `None` for a flag.
    pub arginfo: Option<&'static str>,
    pub usage: &'static str,
}

struct Registered {
    name: &'static str,
    handler: OptionHandler,
}

static REGISTERED: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

fn leak(s: &str) -> Result<*mut c_char, SpankError> {
    let c = CString::new(s).map_err(|_| SpankError::Nul { what: s.to_owned() })?;
    // Slurm copies the strings today, but older releases kept the pointers: the
    // few bytes of an option's text live as long as the process.
    Ok(c.into_raw())
}

impl Spank {
    /// Registers `--name[=arginfo]`; only valid in `slurm_spank_init`.
    pub fn register_option(
        &self,
        spec: &OptionSpec,
        handler: OptionHandler,
    ) -> Result<(), SpankError> {
        let val = {
            let mut reg = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
            // The same process may register again if Slurm reloads the stack.
            match reg.iter().position(|r| r.name == spec.name) {
                Some(i) => {
                    reg[i].handler = handler;
                    i
                }
                None => {
                    reg.push(Registered {
                        name: spec.name,
                        handler,
                    });
                    reg.len() - 1
                }
            }
        };
        let mut opt = ffi::spank_option {
            name: leak(spec.name)?,
            arginfo: match spec.arginfo {
                Some(a) => leak(a)?,
                None => std::ptr::null_mut(),
            },
            usage: leak(spec.usage)?,
            has_arg: spec.arginfo.is_some() as c_int,
            val: val as c_int,
            cb: Some(trampoline),
        };
        // SAFETY: `opt` and the strings it points to are valid for the call (the
        // strings for the whole process); Slurm copies the struct.
        let rc = unsafe { ffi::spank_option_register(self.raw(), &mut opt) };
        if rc == ffi::ESPANK_SUCCESS {
            Ok(())
        } else {
            Err(SpankError::from_code(
                format!("register --{}", spec.name),
                rc,
            ))
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("option callback for unknown option index {0}")]
struct UnknownOption(c_int);

unsafe extern "C" fn trampoline(val: c_int, optarg: *const c_char, remote: c_int) -> c_int {
    let value = if optarg.is_null() {
        None
    } else {
        // SAFETY: Slurm passes a NUL-terminated argument valid during the call.
        Some(
            unsafe { CStr::from_ptr(optarg) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    guard("option", || {
        let found = {
            let reg = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
            usize::try_from(val)
                .ok()
                .and_then(|i| reg.get(i))
                .map(|r| (r.name, r.handler))
        };
        let Some((name, handler)) = found else {
            return Err(Box::new(UnknownOption(val)) as Box<dyn Error + Send + Sync>);
        };
        handler(name, value.as_deref(), remote != 0)
    })
}
