//! Putting files into an image directory so that readers never see a partial
//! image: write to a temporary name, fsync, rename, and publish `<id>.json`
//! before `<id>.squashfs` (a visible image always has its metadata). Work in
//! progress lives in `.staging-<host>-*` directories inside the image
//! directory, so the final rename never crosses filesystems.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use shifter_api::{ImageId, ImageMeta};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image id {0:?} is not a sha256 hex digest")]
    BadId(String),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PublishError {
    let path = path.to_owned();
    move |source| PublishError::Io { op, path, source }
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

/// This gateway instance's name in the store's `owner` column (`StoredImage::replica`) and in its
/// staging directories: the host name (replicas run on distinct hosts).
pub fn instance_name() -> String {
    host_tag()
}

fn host_tag() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into())
}

fn staging_prefix() -> String {
    format!(".staging-{}-", host_tag())
}

/// A fresh private directory for one job inside `image_dir`.
pub fn new_staging(image_dir: &Path) -> Result<PathBuf, PublishError> {
    let n = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = image_dir.join(format!("{}{}-{n}", staging_prefix(), std::process::id()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(io("create staging directory", &dir))?;
    Ok(dir)
}

pub fn remove_staging(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove staging directory");
        }
    }
}

/// Removes what a killed gateway on this host left behind: its staging
/// directories and temporary files. Returns what was removed.
pub fn clean_leftovers(image_dir: &Path) -> Result<Vec<PathBuf>, PublishError> {
    let prefix = staging_prefix();
    let mut removed = Vec::new();
    let entries = match fs::read_dir(image_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io("read image directory", image_dir)(e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(&prefix) {
            remove_staging(&path);
            removed.push(path);
        } else if name.starts_with(".tmp-") && fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    Ok(removed)
}

fn mode_for(meta: &ImageMeta) -> u32 {
    if meta.acl.is_public() {
        0o644
    } else {
        0o600
    }
}

fn fsync_dir(dir: &Path) -> Result<(), PublishError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// Publishes `meta` and the squashfs at `squashfs` (which must be inside
/// `image_dir`, e.g. in a staging directory) as `<id>.json` and `<id>.squashfs`.
pub fn publish(image_dir: &Path, meta: &ImageMeta, squashfs: &Path) -> Result<(), PublishError> {
    let id = ImageId::parse(&meta.id).map_err(|_| PublishError::BadId(meta.id.clone()))?;
    let mode = mode_for(meta);
    write_meta(image_dir, &id, meta)?;

    let sq = File::open(squashfs).map_err(io("open converted image", squashfs))?;
    sq.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io("chmod converted image", squashfs))?;
    sq.sync_all()
        .map_err(io("fsync converted image", squashfs))?;
    let dest = image_dir.join(id.squashfs_name());
    fs::rename(squashfs, &dest).map_err(io("rename converted image into place", &dest))?;
    fsync_dir(image_dir)
}

/// Writes `<id>.json` atomically (also used to update the ACL of a published image).
pub fn write_meta(image_dir: &Path, id: &ImageId, meta: &ImageMeta) -> Result<(), PublishError> {
    let n = STAGING_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = image_dir.join(format!(".tmp-{}-{}-{n}.json", id, std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode_for(meta))
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        // The umask may have narrowed the mode given to open.
        f.set_permissions(fs::Permissions::from_mode(mode_for(meta)))
            .map_err(io("chmod", &tmp))?;
        f.write_all(meta.to_json().as_bytes())
            .map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        let dest = image_dir.join(id.meta_name());
        fs::rename(&tmp, &dest).map_err(io("rename metadata into place", &dest))?;
        fsync_dir(image_dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Rewrites `<id>.json` of a published image (its ACL changed) and sets the
/// squashfs mode to match: a narrowed ACL closes the image first.
pub fn set_meta(image_dir: &Path, id: &ImageId, meta: &ImageMeta) -> Result<(), PublishError> {
    let sq = image_dir.join(id.squashfs_name());
    let mode = fs::Permissions::from_mode(mode_for(meta));
    if !meta.acl.is_public() {
        fs::set_permissions(&sq, mode.clone()).map_err(io("chmod", &sq))?;
    }
    write_meta(image_dir, id, meta)?;
    fs::set_permissions(&sq, mode).map_err(io("chmod", &sq))
}

/// Published images no record points at any more (their tag moved to a new
/// id) whose files are older than `before`: jobs pinned to the old id keep
/// working until autoexpire removes them.
pub fn unreferenced(
    image_dir: &Path,
    referenced: &std::collections::HashSet<String>,
    before: std::time::SystemTime,
) -> Result<Vec<ImageId>, PublishError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(image_dir).map_err(io("read image directory", image_dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_suffix(".squashfs")
            .or_else(|| name.strip_suffix(".json"))
        else {
            continue;
        };
        let Ok(id) = ImageId::parse(stem) else {
            continue;
        };
        if referenced.contains(id.as_str()) || out.contains(&id) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < before);
        if old {
            out.push(id);
        }
    }
    Ok(out)
}

/// Removes a published image: the squashfs first, so the image disappears
/// before its metadata does.
pub fn remove(image_dir: &Path, id: &ImageId) -> Result<(), PublishError> {
    for name in [id.squashfs_name(), id.meta_name()] {
        let p = image_dir.join(name);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove", &p)(e)),
        }
    }
    fsync_dir(image_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shifter_api::ImageAcl;

    fn meta(acl: ImageAcl) -> ImageMeta {
        ImageMeta {
            id: "ab".repeat(32),
            format: "squashfs".into(),
            itype: "docker".into(),
            acl,
            ..Default::default()
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn published_image_has_meta_and_public_mode() {
        let dir = tempfile::tempdir().unwrap();
        let staging = new_staging(dir.path()).unwrap();
        let sq = staging.join("image.squashfs");
        fs::write(&sq, b"hsqs....").unwrap();
        let m = meta(ImageAcl::default());
        publish(dir.path(), &m, &sq).unwrap();
        let id = ImageId::parse(&m.id).unwrap();
        let json = dir.path().join(id.meta_name());
        let img = dir.path().join(id.squashfs_name());
        assert_eq!(ImageMeta::from_json(&fs::read(&json).unwrap()).unwrap(), m);
        assert_eq!(fs::read(&img).unwrap(), b"hsqs....");
        assert_eq!(mode(&json), 0o644);
        assert_eq!(mode(&img), 0o644);
        remove_staging(&staging);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "nothing but the image and its meta: {names:?}"
        );
    }

    #[test]
    fn acl_image_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let staging = new_staging(dir.path()).unwrap();
        let sq = staging.join("x");
        fs::write(&sq, b"x").unwrap();
        let m = meta(ImageAcl {
            uids: vec![1001],
            gids: vec![],
        });
        publish(dir.path(), &m, &sq).unwrap();
        let id = ImageId::parse(&m.id).unwrap();
        assert_eq!(mode(&dir.path().join(id.meta_name())), 0o600);
        assert_eq!(mode(&dir.path().join(id.squashfs_name())), 0o600);
    }

    #[test]
    fn leftovers_of_a_killed_gateway_are_removed_and_images_kept() {
        let dir = tempfile::tempdir().unwrap();
        let staging = new_staging(dir.path()).unwrap();
        fs::write(staging.join("partial.squashfs"), b"half").unwrap();
        fs::write(dir.path().join(".tmp-abc.json"), b"{").unwrap();
        fs::write(dir.path().join("keep.squashfs"), b"x").unwrap();
        let removed = clean_leftovers(dir.path()).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["keep.squashfs".to_string()]);
    }

    #[test]
    fn unreferenced_finds_old_images_no_record_points_at() {
        let dir = tempfile::tempdir().unwrap();
        let kept = ImageId::parse(&"aa".repeat(32)).unwrap();
        let orphan = ImageId::parse(&"bb".repeat(32)).unwrap();
        for id in [&kept, &orphan] {
            fs::write(dir.path().join(id.squashfs_name()), b"x").unwrap();
            fs::write(dir.path().join(id.meta_name()), b"{}").unwrap();
        }
        fs::write(dir.path().join("unrelated.txt"), b"x").unwrap();
        let referenced: std::collections::HashSet<String> = [kept.to_string()].into();
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(
            unreferenced(dir.path(), &referenced, future).unwrap(),
            vec![orphan]
        );
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        assert!(
            unreferenced(dir.path(), &referenced, past)
                .unwrap()
                .is_empty(),
            "too recent"
        );
    }

    #[test]
    fn remove_deletes_both_files_and_tolerates_absence() {
        let dir = tempfile::tempdir().unwrap();
        let id = ImageId::parse(&"cd".repeat(32)).unwrap();
        fs::write(dir.path().join(id.squashfs_name()), b"x").unwrap();
        fs::write(dir.path().join(id.meta_name()), b"{}").unwrap();
        remove(dir.path(), &id).unwrap();
        remove(dir.path(), &id).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
