//! The SPANK handle Slurm passes to every callback, with typed getters.

use std::ffi::{c_char, c_int, CStr, CString};

use crate::error::SpankError;
use crate::ffi;
use crate::ffi::spank_item as item;

/// `SLURM_BATCH_SCRIPT`: the step id of a batch job's script.
pub const BATCH_STEP_ID: u32 = 0xffff_fffb;
/// `SLURM_EXTERN_CONT`: the step id of the extern step (adopted processes).
pub const EXTERN_STEP_ID: u32 = 0xffff_fffc;

/// Where the plugin has been loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// srun, as the user.
    Local,
    /// slurmstepd, as root, once per step per node.
    Remote,
    /// sbatch and salloc, as the user.
    Allocator,
    /// slurmd itself.
    Slurmd,
    /// The job prolog/epilog.
    JobScript,
    /// Slurm could not tell (or a newer Slurm has a context we do not know).
    Unknown,
}

impl Context {
    /// The context of the process the plugin is loaded in.
    pub fn current() -> Context {
        // SAFETY: spank_context takes no arguments and reads Slurm's global stack.
        let raw = unsafe { ffi::spank_context() };
        match raw {
            ffi::spank_context::S_CTX_LOCAL => Context::Local,
            ffi::spank_context::S_CTX_REMOTE => Context::Remote,
            ffi::spank_context::S_CTX_ALLOCATOR => Context::Allocator,
            ffi::spank_context::S_CTX_SLURMD => Context::Slurmd,
            ffi::spank_context::S_CTX_JOB_SCRIPT => Context::JobScript,
            _ => Context::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Context::Local => "local",
            Context::Remote => "remote",
            Context::Allocator => "allocator",
            Context::Slurmd => "slurmd",
            Context::JobScript => "job_script",
            Context::Unknown => "unknown",
        }
    }
}

/// The handle Slurm passes to a callback. Valid only during that callback.
#[derive(Debug)]
pub struct Spank {
    raw: ffi::spank_t,
}

/// The plugstack.conf arguments of a callback (`argc`/`argv`), as strings.
///
/// # Safety
/// `argv` must point to `argc` valid NUL-terminated strings (or be NULL with
/// `argc` 0), as Slurm guarantees for every SPANK callback.
pub unsafe fn args_from_raw(argc: c_int, argv: *mut *mut c_char) -> Vec<String> {
    if argv.is_null() || argc <= 0 {
        return Vec::new();
    }
    (0..argc as usize)
        .map(|i| {
            // SAFETY: the caller guarantees argv has argc valid entries.
            let p = unsafe { *argv.add(i) };
            if p.is_null() {
                String::new()
            } else {
                // SAFETY: each entry is a NUL-terminated string owned by Slurm.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        })
        .collect()
}

fn check(what: &str, rc: ffi::spank_err_t) -> Result<(), SpankError> {
    if rc == ffi::ESPANK_SUCCESS {
        Ok(())
    } else {
        Err(SpankError::from_code(what, rc))
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, SpankError> {
    CString::new(s).map_err(|_| SpankError::Nul {
        what: what.to_owned(),
    })
}

impl Spank {
    /// Wraps the handle of the running callback.
    ///
    /// # Safety
    /// `raw` must be the handle Slurm passed to the callback that is running,
    /// and the `Spank` must not outlive that callback.
    pub unsafe fn from_raw(raw: ffi::spank_t) -> Spank {
        Spank { raw }
    }

    pub fn raw(&self) -> ffi::spank_t {
        self.raw
    }

    /// True in slurmstepd.
    pub fn remote(&self) -> bool {
        // SAFETY: the handle is valid for the running callback (see from_raw).
        unsafe { ffi::spank_remote(self.raw) == 1 }
    }

    fn get_u32(&self, it: ffi::spank_item_t, what: &str) -> Result<u32, SpankError> {
        let mut v: u32 = 0;
        // SAFETY: the items read with this helper all take one `uint32_t *`
        // (uid_t and gid_t are u32 on Linux); `v` outlives the call.
        let rc = unsafe { ffi::spank_get_item(self.raw, it, &mut v as *mut u32) };
        check(what, rc).map(|()| v)
    }

    pub fn job_id(&self) -> Result<u32, SpankError> {
        self.get_u32(item::S_JOB_ID, "job id")
    }

    /// The step id; [`BATCH_STEP_ID`] for a batch script.
    pub fn step_id(&self) -> Result<u32, SpankError> {
        self.get_u32(item::S_JOB_STEPID, "step id")
    }

    pub fn uid(&self) -> Result<u32, SpankError> {
        self.get_u32(item::S_JOB_UID, "job uid")
    }

    pub fn gid(&self) -> Result<u32, SpankError> {
        self.get_u32(item::S_JOB_GID, "job gid")
    }

    /// This node's index within the step (0-based).
    pub fn node_id(&self) -> Result<u32, SpankError> {
        self.get_u32(item::S_JOB_NODEID, "node id")
    }

    /// Tasks of the step on this node.
    pub fn local_task_count(&self) -> Result<u32, SpankError> {
        self.get_u32(item::S_JOB_LOCAL_TASK_COUNT, "local task count")
    }

    /// The task's node-local id (task callbacks only).
    pub fn task_id(&self) -> Result<u32, SpankError> {
        let mut v: c_int = 0;
        // SAFETY: S_TASK_ID takes one `int *`; `v` outlives the call.
        let rc = unsafe { ffi::spank_get_item(self.raw, item::S_TASK_ID, &mut v as *mut c_int) };
        check("task id", rc).map(|()| v as u32)
    }

    /// The task's pid (task callbacks only).
    pub fn task_pid(&self) -> Result<i32, SpankError> {
        let mut v: libc_pid = 0;
        // SAFETY: S_TASK_PID takes one `pid_t *`; `v` outlives the call.
        let rc =
            unsafe { ffi::spank_get_item(self.raw, item::S_TASK_PID, &mut v as *mut libc_pid) };
        check("task pid", rc).map(|()| v)
    }

    /// Supplementary groups of the job's user (remote context).
    pub fn supplementary_gids(&self) -> Result<Vec<u32>, SpankError> {
        let mut gids: *mut u32 = std::ptr::null_mut();
        let mut n: c_int = 0;
        // SAFETY: S_JOB_SUPPLEMENTARY_GIDS takes `(gid_t **, int *)`; Slurm keeps
        // ownership of the array, which we copy before returning.
        let rc = unsafe {
            ffi::spank_get_item(
                self.raw,
                item::S_JOB_SUPPLEMENTARY_GIDS,
                &mut gids as *mut *mut u32,
                &mut n as *mut c_int,
            )
        };
        check("supplementary gids", rc)?;
        if gids.is_null() || n <= 0 {
            return Ok(Vec::new());
        }
        // SAFETY: Slurm returned an array of `n` gids valid during the callback.
        Ok(unsafe { std::slice::from_raw_parts(gids, n as usize) }.to_vec())
    }

    /// The job's command line (`S_JOB_ARGV`).
    pub fn job_argv(&self) -> Result<Vec<String>, SpankError> {
        let mut argc: c_int = 0;
        let mut argv: *mut *mut c_char = std::ptr::null_mut();
        // SAFETY: S_JOB_ARGV takes `(int *, char ***)`; Slurm owns the strings.
        let rc = unsafe {
            ffi::spank_get_item(
                self.raw,
                item::S_JOB_ARGV,
                &mut argc as *mut c_int,
                &mut argv as *mut *mut *mut c_char,
            )
        };
        check("job argv", rc)?;
        // SAFETY: Slurm returned argc valid strings.
        Ok(unsafe { args_from_raw(argc, argv) })
    }

    /// The job's environment (`S_JOB_ENV`), as `KEY=VALUE` strings.
    pub fn job_env(&self) -> Result<Vec<String>, SpankError> {
        let mut env: *mut *mut c_char = std::ptr::null_mut();
        // SAFETY: S_JOB_ENV takes one `char ***`; the array is NULL-terminated
        // and owned by Slurm, and we copy it before returning.
        let rc = unsafe {
            ffi::spank_get_item(self.raw, item::S_JOB_ENV, &mut env as *mut *mut *mut c_char)
        };
        check("job environment", rc)?;
        let mut out = Vec::new();
        if env.is_null() {
            return Ok(out);
        }
        let mut i = 0;
        loop {
            // SAFETY: walking a NULL-terminated array returned by Slurm.
            let p = unsafe { *env.add(i) };
            if p.is_null() {
                break;
            }
            // SAFETY: each entry is a NUL-terminated string.
            out.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
            i += 1;
        }
        Ok(out)
    }

    /// One variable of the job's environment, `None` when unset.
    pub fn getenv(&self, name: &str) -> Result<Option<String>, SpankError> {
        let cname = cstring(name, name)?;
        let mut len = 4096usize;
        loop {
            let mut buf = vec![0u8; len];
            // SAFETY: buf has `len` writable bytes and outlives the call; Slurm
            // NUL-terminates within that length.
            let rc = unsafe {
                ffi::spank_getenv(
                    self.raw,
                    cname.as_ptr(),
                    buf.as_mut_ptr() as *mut c_char,
                    len as c_int,
                )
            };
            match rc {
                ffi::ESPANK_SUCCESS => {
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    buf.truncate(end);
                    return String::from_utf8(buf)
                        .map(Some)
                        .map_err(|_| SpankError::NotUtf8 {
                            what: name.to_owned(),
                        });
                }
                ffi::slurm_err_t::ESPANK_ENV_NOEXIST => return Ok(None),
                ffi::slurm_err_t::ESPANK_NOSPACE if len < (1 << 24) => len *= 4,
                rc => return Err(SpankError::from_code(format!("getenv {name}"), rc)),
            }
        }
    }

    /// Sets a variable in the job's environment (remote context).
    pub fn setenv(&self, name: &str, value: &str, overwrite: bool) -> Result<(), SpankError> {
        let n = cstring(name, name)?;
        let v = cstring(name, value)?;
        // SAFETY: both strings are NUL-terminated and outlive the call; Slurm copies them.
        let rc = unsafe { ffi::spank_setenv(self.raw, n.as_ptr(), v.as_ptr(), overwrite as c_int) };
        check(&format!("setenv {name}"), rc)
    }

    /// Removes a variable from the job's environment (remote context).
    pub fn unsetenv(&self, name: &str) -> Result<(), SpankError> {
        let n = cstring(name, name)?;
        // SAFETY: the string is NUL-terminated and outlives the call.
        let rc = unsafe { ffi::spank_unsetenv(self.raw, n.as_ptr()) };
        check(&format!("unsetenv {name}"), rc)
    }

    /// Sets a variable in the job-control environment that the prolog and
    /// epilog see (as `SPANK_<name>`; local and allocator contexts).
    pub fn job_control_setenv(&self, name: &str, value: &str) -> Result<(), SpankError> {
        let n = cstring(name, name)?;
        let v = cstring(name, value)?;
        // SAFETY: both strings are NUL-terminated and outlive the call; Slurm copies them.
        let rc = unsafe { ffi::spank_job_control_setenv(self.raw, n.as_ptr(), v.as_ptr(), 1) };
        check(&format!("job control setenv {name}"), rc)
    }

    /// The value of a registered option as Slurm recorded it (`None` when not
    /// given). Only valid in the callbacks `spank_option_getopt` allows.
    pub fn getopt(&self, name: &str) -> Result<Option<String>, SpankError> {
        let cname = cstring(name, name)?;
        let usage = c"";
        let mut opt = ffi::spank_option {
            name: cname.as_ptr() as *mut c_char,
            arginfo: std::ptr::null_mut(),
            usage: usage.as_ptr() as *mut c_char,
            has_arg: 1,
            val: 0,
            cb: None,
        };
        let mut arg: *mut c_char = std::ptr::null_mut();
        // SAFETY: `opt` and its strings outlive the call; Slurm only reads them and
        // hands back a pointer into its own cache, which we copy.
        let rc = unsafe { ffi::spank_option_getopt(self.raw, &mut opt, &mut arg) };
        match rc {
            ffi::ESPANK_SUCCESS if arg.is_null() => Ok(Some(String::new())),
            ffi::ESPANK_SUCCESS => {
                // SAFETY: a non-NULL optarg is a NUL-terminated string owned by Slurm.
                Ok(Some(
                    unsafe { CStr::from_ptr(arg) }
                        .to_string_lossy()
                        .into_owned(),
                ))
            }
            ffi::slurm_err_t::ESPANK_ERROR => Ok(None),
            rc => Err(SpankError::from_code(format!("getopt --{name}"), rc)),
        }
    }

    /// Slurm's version string (`S_SLURM_VERSION`), e.g. `22.05.8`.
    pub fn slurm_version(&self) -> Result<String, SpankError> {
        let mut p: *mut c_char = std::ptr::null_mut();
        // SAFETY: S_SLURM_VERSION takes one `char **`; the string is static in Slurm.
        let rc = unsafe {
            ffi::spank_get_item(self.raw, item::S_SLURM_VERSION, &mut p as *mut *mut c_char)
        };
        check("slurm version", rc)?;
        if p.is_null() {
            return Ok(String::new());
        }
        // SAFETY: non-NULL, NUL-terminated, owned by Slurm.
        Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

#[allow(non_camel_case_types)]
type libc_pid = i32;
