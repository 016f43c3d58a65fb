//! Runs a callback body so that Slurm only ever sees 0 or -1.

use std::any::Any;
use std::error::Error;
use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::log;

/// An error and every `source()` below it, joined with `: `.
pub fn error_chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        // thiserror's `#[error("...: {0}")]` already embeds the source; do not repeat it.
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// Runs `body`; an error is logged with its whole chain and a panic with its
/// message, and both become -1. Nothing unwinds into Slurm's C frames.
pub fn guard<E>(what: &str, body: impl FnOnce() -> Result<(), E>) -> c_int
where
    E: Into<Box<dyn Error + Send + Sync>>,
{
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            let e: Box<dyn Error + Send + Sync> = e.into();
            log::error(&error_chain(e.as_ref()));
            -1
        }
        Err(payload) => {
            log::error(&format!(
                "shifter: internal error in {what}: {} (please report this)",
                panic_text(payload.as_ref())
            ));
            -1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner cause")]
    struct Inner;

    #[test]
    fn error_chain_names_every_cause() {
        assert_eq!(error_chain(&Outer(Inner)), "outer: inner cause");
    }

    #[test]
    fn panic_payloads_are_readable() {
        let p = catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_text(p.as_ref()), "boom 1");
    }
}
