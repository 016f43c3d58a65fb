//! Per-node caches in the assembly: the per-user reservation taken before
//! anything is made, and the cache's filesystem made, owned and attached by
//! descriptor.

use std::path::Path;

use crate::config::Config;
use crate::sys::{FsSpec, Handle, MountAttrs, NodeKind, Sys};
use crate::user::UserInfo;
use crate::volume::{DestinationPolicy, Volume, VolumeError};

use super::assembler::Assembler;
use super::SetupError;

impl Assembler<'_> {
    /// Makes a per-node cache and mounts it at `v.destination`, owned by the
    /// user, mode 0700: ownership is set on the new filesystem's own root
    /// through the detached mount, before it is attached anywhere.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cache_mount(
        &mut self,
        cfg: &Config,
        root: &Path,
        v: &Volume,
        req: &crate::per_node_cache::CacheRequest,
        index: usize,
        user: &UserInfo,
        policy: &DestinationPolicy,
    ) -> Result<(), SetupError> {
        let Some(cache_cfg) = cfg.per_node_cache.as_ref() else {
            // check_volume refuses this before anything is mounted.
            return Err(VolumeError::CacheRefused {
                destination: v.destination.clone(),
                why: "[per_node_cache] is not configured".into(),
            }
            .into());
        };
        let dest = &v.destination;
        let step = format!("per-node cache {}", dest.display());
        let target = self.user_target(&step, root, dest, NodeKind::Dir, policy)?;
        let formatted = crate::per_node_cache::format(
            self.sys, cache_cfg, &v.source, dest, req, index, user.uid,
        )?;
        let device = formatted.device.path.to_string_lossy().into_owned();
        let fs = self.step(
            format!("{step}: mounting the xfs"),
            self.sys.fs_mount(&FsSpec {
                fstype: "xfs",
                source: &device,
                data: "",
                attrs: MountAttrs::NOSUID_NODEV,
            }),
        )?;
        // The mount holds the device now; our descriptor can go.
        drop(formatted);
        self.step(
            format!("{step}: giving it to uid {}", user.uid),
            self.sys.chown_dir(&fs, user.uid, user.gid, 0o700),
        )?;
        self.attach(&step, &fs, &target)
    }
}

/// The per-step count and the per-user node total of per-node caches,
/// before anything is made, under the user's cache lock (returned: keep it
/// until the caches are attached).
pub(super) fn reserve_cache_totals(
    sys: &dyn Sys,
    cfg: &Config,
    user: &UserInfo,
    volumes: &[Volume],
) -> Result<Option<Handle>, SetupError> {
    let sizes: Vec<u64> = volumes
        .iter()
        .filter_map(|v| v.cache.as_ref().map(|c| c.size))
        .collect();
    let (Some(cache_cfg), Some(first)) = (
        cfg.per_node_cache.as_ref(),
        volumes.iter().find(|v| v.cache.is_some()),
    ) else {
        return Ok(None);
    };
    let lock =
        crate::per_node_cache::lock_user_totals(sys, cache_cfg, user.uid, &first.destination)?;
    let attached =
        crate::per_node_cache::attached_bytes(user.uid, crate::per_node_cache::loop_devices());
    crate::per_node_cache::check_totals(cache_cfg, user.uid, &sizes, attached).map_err(|why| {
        VolumeError::CacheRefused {
            destination: first.destination.clone(),
            why,
        }
    })?;
    Ok(Some(lock))
}
