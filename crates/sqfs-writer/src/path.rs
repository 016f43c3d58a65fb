//! Validation of the caller's relative, '/'-separated byte paths.

use crate::{Error, PathBytes};

/// Linux' NAME_MAX: squashfs could store 256 bytes, but no tool could create or open
/// such a name.
pub(crate) const MAX_NAME: usize = 255;

/// Linux' PATH_MAX less the terminating NUL; the kernel refuses longer symlinks anyway.
pub(crate) const MAX_SYMLINK: usize = 4095;

/// Splits `path` into its components; "" (the root) has none.
pub(crate) fn components(path: &[u8]) -> Result<Vec<&[u8]>, Error> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |why| Error::BadPath {
        path: PathBytes::from(path),
        why,
    };
    if path[0] == b'/' {
        return Err(bad("must be relative (no leading '/')"));
    }
    if path.contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    path.split(|&b| b == b'/')
        .map(|c| match c {
            b"" => Err(bad("has an empty component ('//' or a trailing '/')")),
            b"." | b".." => Err(bad("has a '.' or '..' component")),
            c if c.len() > MAX_NAME => Err(bad("has a name longer than 255 bytes")),
            c => Ok(c),
        })
        .collect()
}

pub(crate) fn check_symlink_target(path: &[u8], target: &[u8]) -> Result<(), Error> {
    let why = if target.is_empty() {
        "is empty"
    } else if target.contains(&0) {
        "contains a NUL byte"
    } else if target.len() > MAX_SYMLINK {
        "is longer than 4095 bytes"
    } else {
        return Ok(());
    };
    Err(Error::BadSymlink {
        path: PathBytes::from(path),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_no_components() {
        assert!(components(b"").unwrap().is_empty());
    }

    #[test]
    fn names_may_hold_any_byte_but_slash_and_nul() {
        let c = components(b"a b/\xff\n\\/...").unwrap();
        assert_eq!(c, vec![&b"a b"[..], b"\xff\n\\", b"..."]);
    }

    #[test]
    fn absolute_dot_dotdot_empty_nul_and_long_names_are_refused() {
        let long = vec![b'x'; 256];
        for p in [
            &b"/etc"[..],
            b"a/../b",
            b"./a",
            b"a//b",
            b"a/",
            b"a\0b",
            &long,
        ] {
            assert!(
                matches!(components(p), Err(Error::BadPath { .. })),
                "{:?}",
                p.escape_ascii().to_string()
            );
        }
        assert!(components(&[b'x'; 255]).is_ok());
    }

    #[test]
    fn symlink_targets_must_be_nonempty_without_nul_and_short() {
        assert!(check_symlink_target(b"l", b"../x y").is_ok());
        assert!(check_symlink_target(b"l", b"").is_err());
        assert!(check_symlink_target(b"l", b"a\0").is_err());
        assert!(check_symlink_target(b"l", &[b'a'; 4096]).is_err());
    }
}
