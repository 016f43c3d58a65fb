//! Where request credentials come from: munged for real use, anything else in tests.

use std::path::PathBuf;

use munge_sys::MungeError;

/// Produces the value of the `authentication` header, fresh for every request
/// (munged refuses a credential it has already decoded), bound to that one
/// request: `path` is the gateway's own path and query (what the gateway
/// receives, without any prefix of the gateway URL), `body` the exact bytes sent.
pub trait Authenticator: Send + Sync {
    fn credential(&self, method: &str, path: &str, body: &[u8]) -> Result<String, MungeError>;
}

/// Credentials from the local munged.
#[derive(Debug, Clone, Default)]
pub struct MungeAuth {
    /// munged's socket; `None` for libmunge's default.
    pub socket: Option<PathBuf>,
    /// The gateway's account: when set, only it can decode our credentials
    /// (munged refuses even root), so one sent to an impostor cannot be
    /// replayed at the gateway.
    pub gateway_uid: Option<u32>,
}

impl Authenticator for MungeAuth {
    fn credential(&self, method: &str, path: &str, body: &[u8]) -> Result<String, MungeError> {
        // The payload names the gateway and this request, so the credential
        // is worth nothing to another Munge service or for another request.
        let payload = shifter_api::credential::request_payload(method, path, body);
        munge_sys::encode_with(
            payload.as_bytes(),
            &munge_sys::EncodeOptions {
                socket: self.socket.as_deref(),
                decoder_uid: self.gateway_uid,
                ..Default::default()
            },
        )
    }
}
