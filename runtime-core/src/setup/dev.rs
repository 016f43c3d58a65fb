//! The container's minimal `/dev`.

use std::path::{Path, PathBuf};

use crate::config::Module;
use crate::sys::{FsSpec, Handle, MountAttrs};

use super::assembler::Assembler;
use super::SetupError;

/// Device nodes every container gets, bound from the host's `/dev`.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// A minimal `/dev`: a small tmpfs with bind-mounted host nodes, a private
/// devpts instance and a `/dev/shm`, all resolved below the new tmpfs itself.
/// The device binds and devpts are the only mounts of the container without
/// `nodev`.
pub(super) fn mount_dev(
    a: &mut Assembler<'_>,
    ovl: &Handle,
    modules: &[(&str, &Module)],
) -> Result<(), SetupError> {
    let sys = a.sys;
    let dev = a.new_fs_beneath(
        "mounting /dev",
        ovl,
        "/",
        "dev",
        &FsSpec {
            fstype: "tmpfs",
            source: "tmpfs",
            data: "size=64k,mode=0755",
            attrs: MountAttrs::NOSUID_NODEV_NOEXEC,
        },
    )?;
    let node_attrs = MountAttrs {
        rdonly: false,
        nosuid: true,
        nodev: false,
        noexec: true,
    };
    // Callers that select devices (the Slurm plugin) have expanded patterns
    // already; for the others (`shifter`) every match is bound.
    let module_devs = modules
        .iter()
        .flat_map(|(_, m)| crate::config::expand_device_patterns(&m.devices));
    let devices = DEVICES
        .iter()
        .map(|d| PathBuf::from(format!("/dev/{d}")))
        .chain(module_devs);
    for d in devices {
        let step = format!("binding {}", d.display());
        // The config allows only paths below /dev.
        let rel = d
            .strip_prefix("/dev")
            .map_err(|_| SetupError::Redirected {
                what: "device",
                path: d.clone(),
                resolved: d.clone(),
            })?
            .to_string_lossy()
            .into_owned();
        // A module may name a directory of devices (`/dev/dri`): its mount
        // point must be a directory too, or the bind fails with ENOTDIR.
        let (src, kind) = a.step(step.clone(), sys.open_host(&d))?;
        let tree = a.detached_bind(&step, &src, node_attrs, false)?;
        let target = a.system_target(&dev, "/dev", &rel, kind)?;
        a.attach(&step, &tree, &target)?;
    }
    a.new_fs_beneath(
        "mounting /dev/pts",
        &dev,
        "/dev",
        "pts",
        &FsSpec {
            fstype: "devpts",
            source: "devpts",
            data: "newinstance,ptmxmode=0666,mode=0620",
            attrs: MountAttrs {
                nodev: false,
                ..MountAttrs::NOSUID_NODEV_NOEXEC
            },
        },
    )?;
    a.new_fs_beneath(
        "mounting /dev/shm",
        &dev,
        "/dev",
        "shm",
        &FsSpec {
            fstype: "tmpfs",
            source: "tmpfs",
            data: "mode=1777",
            attrs: MountAttrs::NOSUID_NODEV_NOEXEC,
        },
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        a.step(
            format!("linking /dev/{link}"),
            sys.symlink_at(&dev, link, Path::new(target)),
        )?;
    }
    Ok(())
}
