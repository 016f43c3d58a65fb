//! What can go wrong talking to munged, sorted by what the caller does about it.

use thiserror::Error;

use crate::ffi;

/// A libmunge failure. Each variant carries libmunge's own message (from the
/// context when it has a detailed one) so logs show what munged said.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MungeError {
    /// The credential's time-to-live has passed: the client must send a fresh one.
    #[error("munge credential expired: {0}")]
    Expired(String),
    /// The credential was already decoded once: a replay.
    #[error("munge credential replayed: {0}")]
    Replayed(String),
    /// The credential was encoded in the future: the clocks disagree.
    #[error("munge credential rewound (clock skew between hosts?): {0}")]
    Rewound(String),
    /// Malformed, tampered with, or from another realm or key.
    #[error("invalid munge credential: {0}")]
    Invalid(String),
    /// The credential is restricted to another uid/gid.
    #[error("munge credential not authorized for this decoder: {0}")]
    Unauthorized(String),
    /// munged is not running, or the socket path is wrong or not accessible.
    #[error("munged is not reachable at {socket} (is munged running?): {message}")]
    SocketUnavailable { socket: String, message: String },
    /// A bad argument from our side (e.g. a NUL byte in the socket path).
    #[error("invalid argument to libmunge: {0}")]
    BadArgument(String),
    /// Any other libmunge error, with its number.
    #[error("munge error {code}: {message}")]
    Other { code: u32, message: String },
}

impl MungeError {
    /// Sorts a libmunge error number into a variant.
    pub(crate) fn from_code(code: ffi::munge_err_t, message: String, socket: &str) -> Self {
        match code {
            ffi::EMUNGE_CRED_EXPIRED => MungeError::Expired(message),
            ffi::EMUNGE_CRED_REPLAYED => MungeError::Replayed(message),
            ffi::EMUNGE_CRED_REWOUND => MungeError::Rewound(message),
            ffi::EMUNGE_BAD_CRED
            | ffi::EMUNGE_BAD_VERSION
            | ffi::EMUNGE_BAD_CIPHER
            | ffi::EMUNGE_BAD_MAC
            | ffi::EMUNGE_BAD_ZIP
            | ffi::EMUNGE_BAD_REALM
            | ffi::EMUNGE_BAD_LENGTH
            | ffi::EMUNGE_CRED_INVALID => MungeError::Invalid(message),
            ffi::EMUNGE_CRED_UNAUTHORIZED => MungeError::Unauthorized(message),
            ffi::EMUNGE_SOCKET | ffi::EMUNGE_TIMEOUT => MungeError::SocketUnavailable {
                socket: socket.to_owned(),
                message,
            },
            ffi::EMUNGE_BAD_ARG => MungeError::BadArgument(message),
            code => MungeError::Other { code, message },
        }
    }

    /// True when the credential itself was refused (as opposed to munged being
    /// unreachable): an HTTP server answers these with 401.
    pub fn is_credential_error(&self) -> bool {
        matches!(
            self,
            MungeError::Expired(_)
                | MungeError::Replayed(_)
                | MungeError::Rewound(_)
                | MungeError::Invalid(_)
                | MungeError::Unauthorized(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_sort_into_what_the_caller_acts_on() {
        let e = |c| MungeError::from_code(c, "m".into(), "/s");
        assert_eq!(e(ffi::EMUNGE_CRED_EXPIRED), MungeError::Expired("m".into()));
        assert_eq!(
            e(ffi::EMUNGE_CRED_REPLAYED),
            MungeError::Replayed("m".into())
        );
        assert_eq!(e(ffi::EMUNGE_BAD_CRED), MungeError::Invalid("m".into()));
        assert_eq!(e(ffi::EMUNGE_CRED_INVALID), MungeError::Invalid("m".into()));
        assert_eq!(
            e(ffi::EMUNGE_CRED_UNAUTHORIZED),
            MungeError::Unauthorized("m".into())
        );
        assert_eq!(e(ffi::EMUNGE_CRED_REWOUND), MungeError::Rewound("m".into()));
        assert!(matches!(
            e(ffi::EMUNGE_SOCKET),
            MungeError::SocketUnavailable { ref socket, .. } if socket == "/s"
        ));
        assert_eq!(
            e(ffi::EMUNGE_NO_MEMORY),
            MungeError::Other {
                code: ffi::EMUNGE_NO_MEMORY,
                message: "m".into()
            }
        );
        assert!(e(ffi::EMUNGE_CRED_REPLAYED).is_credential_error());
        assert!(!e(ffi::EMUNGE_SOCKET).is_credential_error());
    }

    #[test]
    fn socket_error_message_says_what_to_check() {
        let e = MungeError::from_code(ffi::EMUNGE_SOCKET, "refused".into(), "/run/x");
        let s = e.to_string();
        assert!(
            s.contains("/run/x") && s.contains("is munged running"),
            "{s}"
        );
    }
}
