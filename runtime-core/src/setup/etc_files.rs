//! Root's writes into the image's root: the generated `/etc` identity files,
//! the host's name resolution and the modules' library lists. Made while the
//! overlay is the only mount in the root.

use std::path::{Path, PathBuf};

use crate::config::{Config, Module};
use crate::etc;
use crate::user::UserInfo;

use super::assembler::Assembler;
use super::SetupError;

/// `/etc/passwd`, `/etc/group`, `/etc/nsswitch.conf` generated for the user,
/// `/etc/hosts` and `/etc/resolv.conf` copied from the host.
pub(super) fn write_etc(
    a: &mut Assembler<'_>,
    cfg: &Config,
    root: &Path,
    user: &UserInfo,
) -> Result<(), SetupError> {
    let files: [(&str, Vec<u8>); 5] = [
        (
            "/etc/passwd",
            etc::passwd(user, &cfg.extra_users).into_bytes(),
        ),
        (
            "/etc/group",
            etc::group(user, &cfg.extra_users).into_bytes(),
        ),
        ("/etc/nsswitch.conf", etc::NSSWITCH.as_bytes().to_vec()),
        (
            "/etc/hosts",
            std::fs::read("/etc/hosts").unwrap_or_else(|_| b"127.0.0.1 localhost\n".to_vec()),
        ),
        (
            "/etc/resolv.conf",
            std::fs::read("/etc/resolv.conf").unwrap_or_default(),
        ),
    ];
    for (path, contents) in &files {
        a.step(
            format!("writing {path}"),
            a.sys.write_in_root(root, Path::new(path), contents, 0o644),
        )?;
    }
    Ok(())
}

/// One `/etc/ld.so.conf.d/shifter-<module>.conf` per module with library
/// directories, on the writable layer. It takes effect only for a user who
/// rebuilds the cache; `LD_LIBRARY_PATH` (see `env`) is what finds them.
pub(super) fn write_ld_so_conf(
    a: &mut Assembler<'_>,
    root: &Path,
    modules: &[(&str, &Module)],
) -> Result<(), SetupError> {
    for (name, m) in modules.iter().filter(|(_, m)| !m.ldconfig_dirs.is_empty()) {
        let path = PathBuf::from(format!("/etc/ld.so.conf.d/shifter-{name}.conf"));
        let mut text = format!("# shifter module {name}\n");
        for d in &m.ldconfig_dirs {
            text.push_str(&format!("{}\n", d.display()));
        }
        a.step(
            format!("writing {}", path.display()),
            a.sys.write_in_root(root, &path, text.as_bytes(), 0o644),
        )?;
    }
    Ok(())
}
