//! `--user`/`--group` lists: names or numbers in, the gateway's comma-separated ids out.

use anyhow::{anyhow, bail, Result};
use nix::unistd::{Group, User};

/// Resolves `alice,1002` to `1001,1002` with the local user database.
pub fn user_ids(list: &str) -> Result<String> {
    ids(list, "user", |name| {
        User::from_name(name)
            .map_err(|e| anyhow!("cannot look up user {name:?}: {e}"))
            .map(|u| u.map(|u| u.uid.as_raw()))
    })
}

/// Resolves `staff,100` to gids.
pub fn group_ids(list: &str) -> Result<String> {
    ids(list, "group", |name| {
        Group::from_name(name)
            .map_err(|e| anyhow!("cannot look up group {name:?}: {e}"))
            .map(|g| g.map(|g| g.gid.as_raw()))
    })
}

fn ids(list: &str, what: &str, lookup: impl Fn(&str) -> Result<Option<u32>>) -> Result<String> {
    let mut out: Vec<u32> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = match item.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(item)?.ok_or_else(|| {
                anyhow!(
                    "unknown {what} {item:?} in --{what}: give a name from `getent` or a number"
                )
            })?,
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    if out.is_empty() {
        bail!("--{what} needs at least one {what} (comma-separated names or ids)");
    }
    Ok(out.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve_to_unique_ids() {
        assert_eq!(user_ids("root, 1002,0,1002").unwrap(), "0,1002");
        assert_eq!(group_ids("root,5").unwrap(), "0,5");
    }

    #[test]
    fn unknown_names_and_empty_lists_are_refused_with_the_name() {
        let e = user_ids("no-such-user-xyz").unwrap_err().to_string();
        assert!(
            e.contains("no-such-user-xyz") && e.contains("--user"),
            "{e}"
        );
        assert!(group_ids(" , ").is_err());
    }
}
