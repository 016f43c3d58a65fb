//! The safe API: encode a credential for the calling process, decode one and
//! learn who made it. One libmunge context per call, destroyed on every path.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::MungeError;
use crate::ffi;

/// Where munged listens unless told otherwise (libmunge's compiled-in default).
pub const DEFAULT_SOCKET: &str = "/run/munge/munge.socket.2";

/// Optional settings for [`encode_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodeOptions<'a> {
    /// munged's socket; `None` means libmunge's default.
    pub socket: Option<&'a Path>,
    /// How long the credential stays valid (whole seconds, at least 1);
    /// `None` means munged's default (usually 300 s).
    pub ttl: Option<Duration>,
    /// Only this uid (and root) may decode the credential, so one sent to the
    /// wrong server is useless to it.
    pub decoder_uid: Option<u32>,
}

/// A credential that munged accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Who encoded the credential, as vouched for by munged.
    pub uid: u32,
    pub gid: u32,
    pub payload: Vec<u8>,
    pub encode_time: SystemTime,
    pub ttl: Duration,
}

/// Encodes a credential carrying `payload` for the calling process's uid/gid.
pub fn encode(payload: &[u8], socket: Option<&Path>) -> Result<String, MungeError> {
    encode_with(
        payload,
        &EncodeOptions {
            socket,
            ..Default::default()
        },
    )
}

/// [`encode`] with a time-to-live.
pub fn encode_with(payload: &[u8], opts: &EncodeOptions<'_>) -> Result<String, MungeError> {
    let ctx = Ctx::new(opts.socket)?;
    if let Some(ttl) = opts.ttl {
        // A zero ttl means "daemon default" to libmunge, which would silently
        // lengthen what the caller asked to be short.
        let secs = c_int::try_from(ttl.as_secs().max(1))
            .map_err(|_| MungeError::BadArgument(format!("ttl {ttl:?} is too long")))?;
        // SAFETY: ctx.raw is a live context; MUNGE_OPT_TTL reads one `int` vararg.
        let rc = unsafe { ffi::munge_ctx_set(ctx.raw, ffi::MUNGE_OPT_TTL as c_int, secs) };
        ctx.check(rc)?;
    }
    if let Some(uid) = opts.decoder_uid {
        // SAFETY: ctx.raw is live; MUNGE_OPT_UID_RESTRICTION reads one `uid_t` vararg.
        let rc = unsafe {
            ffi::munge_ctx_set(
                ctx.raw,
                ffi::MUNGE_OPT_UID_RESTRICTION as c_int,
                uid as ffi::uid_t,
            )
        };
        ctx.check(rc)?;
    }
    let len = c_int::try_from(payload.len()).map_err(|_| {
        MungeError::BadArgument(format!("payload of {} bytes is too large", payload.len()))
    })?;
    let buf: *const c_void = if payload.is_empty() {
        ptr::null()
    } else {
        payload.as_ptr().cast()
    };
    let mut cred: *mut c_char = ptr::null_mut();
    // SAFETY: ctx.raw is live; buf points to `len` readable bytes (or is NULL with
    // len 0); cred is a valid out-pointer that libmunge sets to a malloc'd string.
    let rc = unsafe { ffi::munge_encode(&mut cred, ctx.raw, buf, len) };
    let cred = Malloced(cred.cast());
    ctx.check(rc)?;
    if cred.0.is_null() {
        return Err(MungeError::Other {
            code: rc,
            message: "libmunge reported success but returned no credential".into(),
        });
    }
    // SAFETY: on success libmunge returns a NUL-terminated string, which stays
    // alive until `cred` is dropped at the end of this function.
    let text = unsafe { CStr::from_ptr(cred.0.cast::<c_char>()) };
    Ok(text.to_string_lossy().into_owned())
}

/// Decodes `cred`, checking it was made with this realm's key, has not expired
/// and has not been decoded before (replay).
pub fn decode(cred: &str, socket: Option<&Path>) -> Result<Decoded, MungeError> {
    // libmunge calls an empty credential a bad argument; to a server it is a bad credential.
    if cred.trim().is_empty() {
        return Err(MungeError::Invalid("no credential given".into()));
    }
    let cred = CString::new(cred.trim())
        .map_err(|_| MungeError::Invalid("credential contains a NUL byte".into()))?;
    let ctx = Ctx::new(socket)?;
    let mut buf: *mut c_void = ptr::null_mut();
    let mut len: c_int = 0;
    let mut uid: ffi::uid_t = 0;
    let mut gid: ffi::gid_t = 0;
    // SAFETY: cred is NUL-terminated and outlives the call; every out-pointer
    // points to a local of the type munge.h declares.
    let rc = unsafe {
        ffi::munge_decode(
            cred.as_ptr(),
            ctx.raw,
            &mut buf,
            &mut len,
            &mut uid,
            &mut gid,
        )
    };
    // libmunge allocates the payload even for expired/replayed credentials.
    let buf = Malloced(buf);
    ctx.check(rc)?;
    let payload = match usize::try_from(len) {
        Ok(n) if n > 0 && !buf.0.is_null() => {
            // SAFETY: on success buf holds `len` bytes allocated by libmunge,
            // alive until `buf` is dropped; we copy them out before that.
            unsafe { std::slice::from_raw_parts(buf.0.cast::<u8>(), n) }.to_vec()
        }
        _ => Vec::new(),
    };
    let mut encoded: libc::time_t = 0;
    // SAFETY: ctx.raw is live; MUNGE_OPT_ENCODE_TIME writes one `time_t`.
    let rc = unsafe {
        ffi::munge_ctx_get(
            ctx.raw,
            ffi::MUNGE_OPT_ENCODE_TIME as c_int,
            &mut encoded as *mut libc::time_t,
        )
    };
    ctx.check(rc)?;
    let mut ttl: c_int = 0;
    // SAFETY: ctx.raw is live; MUNGE_OPT_TTL writes one `int`.
    let rc =
        unsafe { ffi::munge_ctx_get(ctx.raw, ffi::MUNGE_OPT_TTL as c_int, &mut ttl as *mut c_int) };
    ctx.check(rc)?;
    Ok(Decoded {
        uid,
        gid,
        payload,
        encode_time: UNIX_EPOCH + Duration::from_secs(u64::try_from(encoded).unwrap_or(0)),
        ttl: Duration::from_secs(u64::try_from(ttl).unwrap_or(0)),
    })
}

/// A buffer libmunge allocated with malloc, freed with free.
struct Malloced(*mut c_void);

impl Drop for Malloced {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from libmunge's malloc and is freed once.
            unsafe { libc::free(self.0) };
        }
    }
}

/// One libmunge context, owned by one call.
struct Ctx {
    raw: ffi::munge_ctx_t,
    socket: String,
}

impl Ctx {
    fn new(socket: Option<&Path>) -> Result<Self, MungeError> {
        // SAFETY: no preconditions; returns NULL only when out of memory.
        let raw = unsafe { ffi::munge_ctx_create() };
        if raw.is_null() {
            return Err(MungeError::Other {
                code: ffi::EMUNGE_NO_MEMORY,
                message: "cannot create a munge context".into(),
            });
        }
        let ctx = Ctx {
            raw,
            socket: socket
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| DEFAULT_SOCKET.to_owned()),
        };
        if let Some(path) = socket {
            let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
                MungeError::BadArgument(format!("socket path {} contains a NUL byte", ctx.socket))
            })?;
            // SAFETY: ctx.raw is live; MUNGE_OPT_SOCKET reads one `char *`,
            // which libmunge copies (strdup) before returning.
            let rc =
                unsafe { ffi::munge_ctx_set(ctx.raw, ffi::MUNGE_OPT_SOCKET as c_int, c.as_ptr()) };
            ctx.check(rc)?;
        }
        Ok(ctx)
    }

    fn check(&self, rc: ffi::munge_err_t) -> Result<(), MungeError> {
        if rc == ffi::EMUNGE_SUCCESS {
            return Ok(());
        }
        Err(MungeError::from_code(rc, self.message(rc), &self.socket))
    }

    /// The context's detailed message if it has one, else the generic one.
    fn message(&self, rc: ffi::munge_err_t) -> String {
        // SAFETY: ctx.raw is live; the result is NULL or a string owned by the context.
        let detail = unsafe { ffi::munge_ctx_strerror(self.raw) };
        let text = if detail.is_null() {
            // SAFETY: munge_strerror accepts any value and returns a static string.
            unsafe { ffi::munge_strerror(rc) }
        } else {
            detail
        };
        if text.is_null() {
            return format!("munge error {rc}");
        }
        // SAFETY: non-NULL results of both calls are NUL-terminated strings that
        // live at least as long as the context; we copy before returning.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // SAFETY: raw came from munge_ctx_create and is destroyed exactly once.
        unsafe { ffi::munge_ctx_destroy(self.raw) };
    }
}
