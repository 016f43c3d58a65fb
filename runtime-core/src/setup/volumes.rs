//! User volumes: their sources opened as the user and cloned first thing in
//! the new namespace, and attached last, once everything of root's is done.

use std::path::Path;

use crate::config::Config;
use crate::sys::{Handle, MountAttrs, NodeKind};
use crate::user::UserInfo;
use crate::volume::{DestinationPolicy, Volume};

use super::assembler::Assembler;
use super::SetupError;

/// Every bind source opened as the user and cloned, with its flags set on
/// every submount, first thing in the new namespace: before anything of ours
/// is mounted, so a source path under mount_root names the host's directory
/// and a source above it (`/`) cannot drag the container's own mounts in, and
/// before a loop device exists, so an opener that hangs on the user's
/// filesystem costs nothing to undo. Always recursive: a plain bind would
/// show what the host's submounts cover, files the user cannot see on the
/// host. `None` for per-node caches, which have no source.
pub(super) fn detach_volume_sources(
    a: &Assembler<'_>,
    user: &UserInfo,
    volumes: &[Volume],
) -> Result<Vec<Option<(Handle, NodeKind)>>, SetupError> {
    let creds = user.creds();
    volumes
        .iter()
        .map(|v| {
            if v.cache.is_some() {
                return Ok(None);
            }
            let (src, kind) = a
                .sys
                .open_as_user(&v.source, &creds)
                .map_err(|e| match e.errno {
                    nix::errno::Errno::ETIMEDOUT => SetupError::VolumeSourceHung {
                        source_path: v.source.clone(),
                        secs: crate::sys::USER_OPEN_TIMEOUT.as_secs(),
                    },
                    errno => SetupError::VolumeSource {
                        source_path: v.source.clone(),
                        errno,
                    },
                })?;
            let attrs = MountAttrs::NOSUID_NODEV.with_rdonly(v.read_only);
            let tree = a.detached_bind(&volume_step(v), &src, attrs, true)?;
            Ok(Some((tree, kind)))
        })
        .collect()
}

pub(super) fn volume_step(v: &Volume) -> String {
    format!("volume {}:{}", v.source.display(), v.destination.display())
}

/// The user's volumes, onto their one resolution each, in order; per-node
/// caches are made here. The last step of the assembly: from here on,
/// directories the user controls are reachable inside the root.
pub(super) fn attach_user_volumes(
    a: &mut Assembler<'_>,
    cfg: &Config,
    root: &Path,
    user: &UserInfo,
    volumes: &[Volume],
    sources: Vec<Option<(Handle, NodeKind)>>,
    policy: &DestinationPolicy,
) -> Result<(), SetupError> {
    for (index, (v, source)) in volumes.iter().zip(sources).enumerate() {
        let Some((tree, kind)) = source else {
            if let Some(cache) = &v.cache {
                a.cache_mount(cfg, root, v, cache, index, user, policy)?;
            }
            continue;
        };
        let step = volume_step(v);
        let target = a.user_target(&step, root, &v.destination, kind, policy)?;
        a.attach(&step, &tree, &target)?;
    }
    Ok(())
}
