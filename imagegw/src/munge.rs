//! libmunge (through `munge-sys`) mapped onto the gateway's auth errors.

use std::path::Path;

use munge_sys::MungeError;

use crate::auth::{AuthError, Credential};

pub fn decode(socket: &Path, credential: &str) -> Result<Credential, AuthError> {
    match munge_sys::decode(credential, Some(socket)) {
        Ok(d) => Ok(Credential {
            uid: d.uid,
            gid: d.gid,
            payload: d.payload,
        }),
        Err(e) => Err(map_error(e)),
    }
}

fn map_error(e: MungeError) -> AuthError {
    match e {
        MungeError::Expired(_) => AuthError::Expired,
        MungeError::Replayed(_) => AuthError::Replayed,
        e if e.is_credential_error() => AuthError::Invalid(e.to_string()),
        e => AuthError::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn munge_errors_map_to_what_the_client_is_told() {
        assert_eq!(
            map_error(MungeError::Expired("x".into())),
            AuthError::Expired
        );
        assert_eq!(
            map_error(MungeError::Replayed("x".into())),
            AuthError::Replayed
        );
        assert!(matches!(
            map_error(MungeError::Invalid("bad mac".into())),
            AuthError::Invalid(_)
        ));
        assert!(matches!(
            map_error(MungeError::SocketUnavailable {
                socket: "/s".into(),
                message: "refused".into()
            }),
            AuthError::Unavailable(_)
        ));
    }
}
