use std::ffi::CStr;

use thiserror::Error;

use crate::ffi;

/// A SPANK call that did not succeed, with what was asked for.
#[derive(Debug, Error)]
pub enum SpankError {
    #[error("{what}: {message} (spank error {code})")]
    Call {
        what: String,
        code: u32,
        message: String,
    },
    #[error("{what}: value contains a NUL byte")]
    Nul { what: String },
    #[error("{what}: value is not UTF-8")]
    NotUtf8 { what: String },
}

impl SpankError {
    pub(crate) fn from_code(what: impl Into<String>, code: ffi::spank_err_t) -> Self {
        // SAFETY: spank_strerror returns a pointer to a static string (or NULL) for
        // any code; it keeps no reference to our arguments.
        let msg = unsafe { ffi::spank_strerror(code) };
        let message = if msg.is_null() {
            "unknown error".to_owned()
        } else {
            // SAFETY: non-NULL results point at NUL-terminated static strings.
            unsafe { CStr::from_ptr(msg) }
                .to_string_lossy()
                .into_owned()
        };
        SpankError::Call {
            what: what.into(),
            code,
            message,
        }
    }

    /// The raw SPANK code, when the error came from Slurm.
    pub fn code(&self) -> Option<u32> {
        match self {
            SpankError::Call { code, .. } => Some(*code),
            _ => None,
        }
    }
}
