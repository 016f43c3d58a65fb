//! The image store checks, made before anything is mounted: the squashfs and
//! its `<id>.json` must be files nobody but root (or the gateway account)
//! could have written, the metadata must describe this image, and its ACL
//! must admit the user.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shifter_api::{ImageId, ImageMeta};
use thiserror::Error;

use crate::config::Config;
use crate::trust::{self, Owners, TrustError};
use crate::user::UserInfo;

const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("image {id} is not in {dir}: pull it first (shifterimg pull) or check the id")]
    NotFound { id: ImageId, dir: PathBuf },
    #[error("refusing image {id}: {cause}")]
    Untrusted { id: ImageId, cause: TrustError },
    #[error("cannot read {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("image metadata {path} is invalid ({why}): re-pull the image")]
    BadMeta { path: PathBuf, why: String },
    #[error("{path} is not a squashfs image (bad magic): re-pull or re-import the image")]
    NotSquashfs { path: PathBuf },
    #[error("{path} was replaced while it was being checked: retry, and if it persists ask an administrator who writes to the image directory")]
    Replaced { path: PathBuf },
    #[error("image {id} is restricted and user {user} (uid {uid}) is not in its ACL: ask the image owner for access")]
    Denied { id: ImageId, user: String, uid: u32 },
    #[error(transparent)]
    GatewayAccount(#[from] crate::config::ConfigError),
}

/// An image that passed every check; the only way to get one is [`check_image`].
#[derive(Debug, Clone)]
pub struct CheckedImage {
    id: ImageId,
    squashfs: PathBuf,
    /// The file the checks were made on: the loop device is attached to
    /// this descriptor, never to whatever the path names later.
    file: Arc<File>,
    meta: ImageMeta,
}

impl CheckedImage {
    pub fn id(&self) -> &ImageId {
        &self.id
    }
    pub fn squashfs(&self) -> &Path {
        &self.squashfs
    }
    pub fn file(&self) -> &File {
        &self.file
    }
    pub fn meta(&self) -> &ImageMeta {
        &self.meta
    }

    /// Skips every check. For unit tests with the fake syscall layer only.
    #[cfg(any(test, feature = "test-utils"))]
    pub fn unchecked(id: ImageId, squashfs: PathBuf, file: File, meta: ImageMeta) -> Self {
        CheckedImage {
            id,
            squashfs,
            file: Arc::new(file),
            meta,
        }
    }
}

/// Checks `image_dir/<id>.squashfs` and `<id>.json` for `user`.
pub fn check_image(
    cfg: &Config,
    id: &ImageId,
    user: &UserInfo,
) -> Result<CheckedImage, ImageError> {
    let dir = &cfg.image_dir;
    let squashfs = dir.join(id.squashfs_name());
    let meta_path = dir.join(id.meta_name());
    if !squashfs.exists() {
        return Err(ImageError::NotFound {
            id: id.clone(),
            dir: dir.clone(),
        });
    }
    let gateway = cfg.gateway_account()?;
    let owners = Owners::root_and(gateway);
    let untrusted = |source| ImageError::Untrusted {
        id: id.clone(),
        cause: source,
    };
    let checked = trust::check_file_and_parents(&squashfs, dir, &owners).map_err(untrusted)?;
    trust::check_file_and_parents(&meta_path, dir, &owners).map_err(untrusted)?;
    let read_err = |source| ImageError::Read {
        path: squashfs.clone(),
        cause: source,
    };
    // The file the path checks were about, by device and inode: a rename
    // over it after the checks is caught here, and from here on only this
    // descriptor is used.
    let canonical = std::fs::canonicalize(&squashfs).map_err(read_err)?;
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&canonical)
        .map_err(read_err)?;
    let opened = file.metadata().map_err(read_err)?;
    if (opened.dev(), opened.ino()) != (checked.dev(), checked.ino()) {
        return Err(ImageError::Replaced { path: squashfs });
    }

    let bytes = std::fs::read(&meta_path).map_err(|source| ImageError::Read {
        path: meta_path.clone(),
        cause: source,
    })?;
    let bad_meta = |why: String| ImageError::BadMeta {
        path: meta_path.clone(),
        why,
    };
    let meta = ImageMeta::from_json(&bytes).map_err(|e| bad_meta(e.to_string()))?;
    if meta.id != id.as_str() {
        return Err(bad_meta(format!("it describes image {}", meta.id)));
    }
    if meta.format != "squashfs" {
        return Err(bad_meta(format!(
            "format {:?} is not supported",
            meta.format
        )));
    }
    if !meta.acl.admits(user.uid, &user.all_gids()) {
        return Err(ImageError::Denied {
            id: id.clone(),
            user: user.name.clone(),
            uid: user.uid,
        });
    }

    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(read_err)?;
    if &magic != SQUASHFS_MAGIC {
        return Err(ImageError::NotSquashfs { path: squashfs });
    }
    Ok(CheckedImage {
        id: id.clone(),
        squashfs,
        file: Arc::new(file),
        meta,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    struct Store {
        _dir: tempfile::TempDir,
        cfg: Config,
        id: ImageId,
    }

    fn store(acl_uids: &[u32]) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        let id = ImageId::parse(ID).unwrap();
        let mut meta = ImageMeta {
            id: ID.into(),
            format: "squashfs".into(),
            itype: "docker".into(),
            ..Default::default()
        };
        meta.acl.uids = acl_uids.to_vec();
        std::fs::write(images.join(id.meta_name()), meta.to_json()).unwrap();
        std::fs::write(images.join(id.squashfs_name()), b"hsqs and the rest").unwrap();
        for f in [id.meta_name(), id.squashfs_name()] {
            std::fs::set_permissions(images.join(f), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let me = nix::unistd::geteuid().as_raw();
        let cfg = Config::parse(
            &format!(
                "system = \"c\"\nimage_dir = \"{}\"\ngateway_uid = {me}\n",
                images.display()
            ),
            Path::new("t.toml"),
        )
        .unwrap();
        Store { _dir: dir, cfg, id }
    }

    fn user(uid: u32) -> UserInfo {
        UserInfo::from_ids("u", uid, uid, &[], "/")
    }

    fn needs_root(name: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        test_skip::skip(name, "needs root (the temp store must be root-owned)");
        false
    }

    #[test]
    fn valid_public_image_passes() {
        if !needs_root("valid_public_image_passes") {
            return;
        }
        let s = store(&[]);
        let img = check_image(&s.cfg, &s.id, &user(1001)).unwrap();
        assert_eq!(img.meta().id, ID);
        assert!(img.squashfs().ends_with(s.id.squashfs_name()));
    }

    /// What is loop-attached is the file that was checked: a rename over
    /// the path afterwards (by whoever writes the image directory) changes
    /// nothing for this run.
    #[test]
    fn the_checked_descriptor_keeps_the_checked_file_after_a_rename_over_it() {
        if !needs_root("the_checked_descriptor_keeps_the_checked_file_after_a_rename_over_it") {
            return;
        }
        let s = store(&[]);
        let img = check_image(&s.cfg, &s.id, &user(1001)).unwrap();
        let path = img.squashfs().to_owned();
        let other = path.with_extension("other");
        std::fs::write(&other, b"hsqs but another image").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let mut content = String::new();
        use std::io::{Seek, SeekFrom};
        let mut f = img.file();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut content).unwrap();
        assert_eq!(content, "hsqs and the rest");
    }

    #[test]
    fn files_of_the_gateway_account_named_by_gateway_user_are_trusted() {
        if !needs_root("files_of_the_gateway_account_named_by_gateway_user_are_trusted") {
            return;
        }
        let s = store(&[]);
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
        for f in [s.id.squashfs_name(), s.id.meta_name()] {
            nix::unistd::chown(&s.cfg.image_dir.join(f), Some(nobody), None).unwrap();
        }
        let with = |extra: &str| {
            Config::parse(
                &format!(
                    "system = \"c\"\nimage_dir = \"{}\"\n{extra}",
                    s.cfg.image_dir.display()
                ),
                Path::new("t.toml"),
            )
            .unwrap()
        };
        let by_name = with("gateway_user = \"nobody\"");
        check_image(&by_name, &s.id, &user(1001)).unwrap();
        let err = check_image(&with(""), &s.id, &user(1001)).unwrap_err();
        assert!(matches!(err, ImageError::Untrusted { .. }), "{err}");
        let missing = with("gateway_user = \"no-such-account-here\"");
        let err = check_image(&missing, &s.id, &user(1001)).unwrap_err();
        assert!(
            matches!(err, ImageError::GatewayAccount(_))
                && err.to_string().contains("create the account"),
            "{err}"
        );
    }

    #[test]
    fn group_writable_image_file_is_refused() {
        if !needs_root("group_writable_image_file_is_refused") {
            return;
        }
        let s = store(&[]);
        let f = s.cfg.image_dir.join(s.id.squashfs_name());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        let err = check_image(&s.cfg, &s.id, &user(1001)).unwrap_err();
        assert!(
            matches!(
                err,
                ImageError::Untrusted {
                    cause: TrustError::Writable { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn group_writable_image_dir_is_refused() {
        if !needs_root("group_writable_image_dir_is_refused") {
            return;
        }
        let s = store(&[]);
        std::fs::set_permissions(&s.cfg.image_dir, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = check_image(&s.cfg, &s.id, &user(1001)).unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
    }

    #[test]
    fn acl_refuses_other_users() {
        if !needs_root("acl_refuses_other_users") {
            return;
        }
        let s = store(&[1001]);
        check_image(&s.cfg, &s.id, &user(1001)).unwrap();
        let err = check_image(&s.cfg, &s.id, &user(1002)).unwrap_err();
        assert!(matches!(err, ImageError::Denied { uid: 1002, .. }), "{err}");
    }

    #[test]
    fn missing_image_names_the_directory() {
        let s = store(&[]);
        let other = ImageId::parse(&"f".repeat(64)).unwrap();
        let err = check_image(&s.cfg, &other, &user(1)).unwrap_err();
        assert!(matches!(err, ImageError::NotFound { .. }));
        assert!(err.to_string().contains("shifterimg pull"), "{err}");
    }

    #[test]
    fn random_bytes_are_not_a_squashfs() {
        if !needs_root("random_bytes_are_not_a_squashfs") {
            return;
        }
        let s = store(&[]);
        std::fs::write(s.cfg.image_dir.join(s.id.squashfs_name()), [0x5a; 4096]).unwrap();
        let err = check_image(&s.cfg, &s.id, &user(1)).unwrap_err();
        assert!(matches!(err, ImageError::NotSquashfs { .. }), "{err}");
    }

    #[test]
    fn metadata_for_another_id_is_refused() {
        if !needs_root("metadata_for_another_id_is_refused") {
            return;
        }
        let s = store(&[]);
        let p = s.cfg.image_dir.join(s.id.meta_name());
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(ID, &"e".repeat(64));
        std::fs::write(&p, text).unwrap();
        let err = check_image(&s.cfg, &s.id, &user(1)).unwrap_err();
        assert!(matches!(err, ImageError::BadMeta { .. }), "{err}");
    }
}
