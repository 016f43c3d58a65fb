//! Tar member names to tree paths: relative, `/`-separated, no `.` or empty
//! components. Absolute names and `..` are refused, never rewritten, because a
//! layer that contains them was not produced by any honest image builder.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    Absolute,
    DotDot,
    Nul,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::Absolute => "an absolute path",
            PathProblem::DotDot => "a '..' component",
            PathProblem::Nul => "a NUL byte",
        })
    }
}

/// Normalises a tar member name. `""`, `"."` and `"./"` are the root (`""`).
pub fn normalize(raw: &[u8]) -> Result<Vec<u8>, PathProblem> {
    if raw.first() == Some(&b'/') {
        return Err(PathProblem::Absolute);
    }
    if raw.contains(&0) {
        return Err(PathProblem::Nul);
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(PathProblem::DotDot),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// Splits `a/b/c` into (`a/b`, `c`); the parent of a top-level name is the root `""`.
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// Joins a normalised directory and a single name.
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    if !dir.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Every strict ancestor of a normalised path, nearest the root first, excluding the root.
pub fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.iter()
        .enumerate()
        .filter(|(_, &b)| b == b'/')
        .map(move |(i, _)| &path[..i])
}

pub fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_empty_components_are_dropped() {
        assert_eq!(normalize(b"./etc//passwd").unwrap(), b"etc/passwd");
        assert_eq!(normalize(b"usr/./bin/").unwrap(), b"usr/bin");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert_eq!(normalize(b".").unwrap(), b"");
    }

    #[test]
    fn absolute_dotdot_and_nul_are_refused() {
        assert_eq!(normalize(b"/etc/passwd"), Err(PathProblem::Absolute));
        assert_eq!(normalize(b"a/../../etc"), Err(PathProblem::DotDot));
        assert_eq!(normalize(b".."), Err(PathProblem::DotDot));
        assert_eq!(normalize(b"a\0b"), Err(PathProblem::Nul));
    }

    #[test]
    fn ancestors_and_parents_walk_from_the_root() {
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, vec![&b"a"[..], &b"a/b"[..]]);
        assert_eq!(ancestors(b"top").count(), 0);
        assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
        assert_eq!(join(b"", b"x"), b"x");
        assert_eq!(join(b"a", b"x"), b"a/x");
    }
}
