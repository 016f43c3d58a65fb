//! `doimport`: publish a site-built squashfs as `custom:<name>`.
//!
//! The gateway does not run as root and cannot become the caller, so it reads
//! the file *on the caller's behalf* only after checking, from owners and mode
//! bits, that the caller could read it: every directory on the canonical path
//! must be searchable by the caller and the file itself readable. The check is
//! made on the opened file's own `fstat` (opened without following a final
//! symlink) and its identity compared with the checked path, so swapping the
//! file after the check does not help. POSIX ACLs are not consulted, so a file
//! readable only through an ACL entry is refused. The file is copied, never
//! handed to a shell or to `unsquashfs`.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use shifter_api::{ImageAcl, ImageMeta};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ImportError {
    #[error("import path {0:?} must be absolute")]
    NotAbsolute(String),
    #[error("cannot import {path}: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot import {0}: uid {1} may not read it")]
    Denied(PathBuf, u32),
    #[error("cannot import {0}: not a regular file")]
    NotRegular(PathBuf),
    #[error("cannot import {0}: the file changed while it was being checked")]
    Changed(PathBuf),
    #[error("cannot import {path}: not a valid squashfs image ({why})")]
    NotSquashfs { path: PathBuf, why: String },
    #[error("unsupported import format {0:?}: only squashfs can be imported")]
    Format(String),
    #[error("import staging failed: {0}")]
    Staging(String),
}

impl ImportError {
    /// True when the caller can fix it (a 4xx); false for gateway-side failures.
    pub fn is_callers(&self) -> bool {
        !matches!(self, ImportError::Staging(_))
    }
}

const READ: u32 = 4;
const SEARCH: u32 = 1;

/// True when the owner/group/other bits of `md` grant `want` to the caller.
fn permits(md: &Metadata, uid: u32, gids: &[u32], want: u32) -> bool {
    let mode = md.mode();
    let bits = if md.uid() == uid {
        (mode >> 6) & 7
    } else if gids.contains(&md.gid()) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & want == want
}

/// Opens `path` for reading if the caller could read it, as explained above.
pub fn open_as_caller(path: &Path, uid: u32, gids: &[u32]) -> Result<(File, PathBuf), ImportError> {
    if !path.is_absolute() {
        return Err(ImportError::NotAbsolute(path.display().to_string()));
    }
    let unreadable = |p: &Path| {
        let p = p.to_owned();
        move |source| ImportError::Unreadable { path: p, source }
    };
    let canonical = fs::canonicalize(path).map_err(unreadable(path))?;
    for dir in canonical.ancestors().skip(1) {
        let md = fs::metadata(dir).map_err(unreadable(dir))?;
        if !permits(&md, uid, gids, SEARCH) {
            return Err(ImportError::Denied(path.to_owned(), uid));
        }
    }
    let checked = fs::symlink_metadata(&canonical).map_err(unreadable(&canonical))?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&canonical)
        .map_err(unreadable(&canonical))?;
    let md = file.metadata().map_err(unreadable(&canonical))?;
    if !md.file_type().is_file() {
        return Err(ImportError::NotRegular(path.to_owned()));
    }
    if (md.dev(), md.ino()) != (checked.dev(), checked.ino()) {
        return Err(ImportError::Changed(path.to_owned()));
    }
    if !permits(&md, uid, gids, READ) {
        return Err(ImportError::Denied(path.to_owned(), uid));
    }
    Ok((file, canonical))
}

/// Checks the squashfs 4.0 superblock (see squashfs-tools' `squashfs_fs.h`).
pub fn check_superblock(sb: &[u8], file_len: u64) -> Result<(), String> {
    if sb.len() < 96 {
        return Err("shorter than a squashfs superblock".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(sb[o..o + 8].try_into().expect("8 bytes"));
    if &sb[0..4] != b"hsqs" {
        return Err("bad magic".into());
    }
    let (major, minor) = (u16_at(28), u16_at(30));
    if (major, minor) != (4, 0) {
        return Err(format!("version {major}.{minor}, expected 4.0"));
    }
    let block_size = u32_at(12);
    let block_log = u16_at(22);
    if !(4096..=1 << 20).contains(&block_size)
        || !block_size.is_power_of_two()
        || u32::from(block_log) != block_size.trailing_zeros()
    {
        return Err(format!(
            "block size {block_size} / log {block_log} inconsistent"
        ));
    }
    let compression = u16_at(20);
    if !(1..=6).contains(&compression) {
        return Err(format!("unknown compressor {compression}"));
    }
    let bytes_used = u64_at(40);
    if bytes_used < 96 || bytes_used > file_len {
        return Err(format!(
            "claims {bytes_used} bytes but the file has {file_len}"
        ));
    }
    Ok(())
}

/// Copies the caller's squashfs into `staging`, validating and hashing it.
/// Returns the metadata to publish and the staged file.
pub fn stage(
    path: &Path,
    format: &str,
    name: &str,
    uid: u32,
    gids: &[u32],
    acl: ImageAcl,
    staging: &Path,
) -> Result<(ImageMeta, PathBuf), ImportError> {
    if format != "squashfs" {
        return Err(ImportError::Format(format.to_owned()));
    }
    let (mut src, canonical) = open_as_caller(path, uid, gids)?;
    let len = src
        .metadata()
        .map_err(|source| ImportError::Unreadable {
            path: canonical.clone(),
            source,
        })?
        .len();
    let dest = staging.join("import.squashfs");
    let staging_err = |e: std::io::Error| ImportError::Staging(format!("{}: {e}", dest.display()));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&dest)
        .map_err(staging_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::with_capacity(96);
    let mut copied = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|source| ImportError::Unreadable {
                path: canonical.clone(),
                source,
            })?;
        if n == 0 {
            break;
        }
        if head.len() < 96 {
            let take = (96 - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(staging_err)?;
        copied += n as u64;
    }
    if copied != len {
        return Err(ImportError::Changed(path.to_owned()));
    }
    check_superblock(&head, copied).map_err(|why| ImportError::NotSquashfs {
        path: path.to_owned(),
        why,
    })?;
    out.sync_all().map_err(staging_err)?;
    let meta = ImageMeta {
        id: hex::encode(hasher.finalize()),
        format: "squashfs".into(),
        itype: "custom".into(),
        tags: vec![name.to_owned()],
        size: copied,
        converter_version: format!("imported by shifter-imagegw {}", env!("CARGO_PKG_VERSION")),
        acl,
        ..Default::default()
    };
    Ok((meta, dest))
}

#[cfg(test)]
pub(crate) fn fake_squashfs(payload: &[u8]) -> Vec<u8> {
    let mut sb = vec![0u8; 96];
    sb[0..4].copy_from_slice(b"hsqs");
    sb[12..16].copy_from_slice(&131072u32.to_le_bytes());
    sb[20..22].copy_from_slice(&1u16.to_le_bytes());
    sb[22..24].copy_from_slice(&17u16.to_le_bytes());
    sb[28..30].copy_from_slice(&4u16.to_le_bytes());
    let total = (96 + payload.len()) as u64;
    sb[40..48].copy_from_slice(&total.to_le_bytes());
    sb.extend_from_slice(payload);
    sb
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn superblock_checks_magic_version_and_size() {
        let good = fake_squashfs(b"data");
        assert_eq!(check_superblock(&good, good.len() as u64), Ok(()));
        let mut bad = good.clone();
        bad[0] = b'x';
        assert!(check_superblock(&bad, 100).unwrap_err().contains("magic"));
        let mut v3 = good.clone();
        v3[28] = 3;
        assert!(check_superblock(&v3, 100).unwrap_err().contains("version"));
        assert!(check_superblock(&good, 50).unwrap_err().contains("claims"));
        assert!(check_superblock(b"hsqs", 4).is_err());
    }

    #[test]
    fn import_stages_a_copy_named_by_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let src = dir.path().join("site.sqfs");
        let bytes = fake_squashfs(b"payload");
        fs::write(&src, &bytes).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
        let staging = dir.path().join("st");
        fs::create_dir(&staging).unwrap();
        let (meta, staged) = stage(
            &src,
            "squashfs",
            "site",
            4242,
            &[4242],
            ImageAcl::default(),
            &staging,
        )
        .unwrap();
        assert_eq!(meta.id, hex::encode(Sha256::digest(&bytes)));
        assert_eq!(meta.itype, "custom");
        assert_eq!(meta.size, bytes.len() as u64);
        assert_eq!(fs::read(staged).unwrap(), bytes);
    }

    #[test]
    fn import_refuses_files_the_caller_cannot_read_and_non_squashfs() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let src = dir.path().join("private.sqfs");
        fs::write(&src, fake_squashfs(b"p")).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o600)).unwrap();
        let staging = dir.path().join("st");
        fs::create_dir(&staging).unwrap();
        // The test process owns the file; uid 4242 is someone else.
        let err = stage(
            &src,
            "squashfs",
            "x",
            4242,
            &[4242],
            ImageAcl::default(),
            &staging,
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::Denied(..)), "{err}");

        let junk = dir.path().join("junk");
        fs::write(&junk, vec![0u8; 4096]).unwrap();
        fs::set_permissions(&junk, fs::Permissions::from_mode(0o644)).unwrap();
        let err = stage(
            &junk,
            "squashfs",
            "y",
            4242,
            &[4242],
            ImageAcl::default(),
            &staging,
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::NotSquashfs { .. }), "{err}");

        let err = stage(
            &junk,
            "tar",
            "y",
            4242,
            &[4242],
            ImageAcl::default(),
            &staging,
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::Format(_)));
        let err = stage(
            Path::new("rel/x"),
            "squashfs",
            "y",
            1,
            &[],
            ImageAcl::default(),
            &staging,
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::NotAbsolute(_)));
    }

    #[test]
    fn import_refuses_files_behind_an_unsearchable_directory() {
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        fs::create_dir(&locked).unwrap();
        let src = locked.join("img.sqfs");
        fs::write(&src, fake_squashfs(b"p")).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
        let err = open_as_caller(&src, 4242, &[4242]).unwrap_err();
        assert!(matches!(err, ImportError::Denied(..)), "{err}");
    }
}
