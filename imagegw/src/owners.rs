//! Who may change a tag. Every tag has an owner, its first puller or
//! importer; only the owner and the admins change its ACL or replace a
//! `custom:` image. Anyone else who may use a tag can refresh it, and the
//! refresh keeps the ACL: one user's re-pull must never lock others out of an
//! image (or open a private one). A user who wants an ACL of their own pulls a
//! private copy into their own namespace, which shadows the shared tag for
//! them alone. Pure logic: the handlers and the job table apply it.

use shifter_api::{ImageAcl, ImageStatus};
use thiserror::Error;

use crate::store::StoredImage;

/// Store tags of private copies start with this; canonical Docker references
/// start with a registry host, which never contains it, so the namespaces
/// cannot collide.
const PRIVATE_PREFIX: char = '~';

/// The store tag of `uid`'s private copy of the docker tag `canonical`.
pub fn private_tag(uid: u32, canonical: &str) -> String {
    format!("{PRIVATE_PREFIX}{uid}/{canonical}")
}

/// `(uid, canonical)` when `tag` is the store tag of a private copy.
pub fn split_private(tag: &str) -> Option<(u32, &str)> {
    let (uid, canonical) = tag.strip_prefix(PRIVATE_PREFIX)?.split_once('/')?;
    Some((uid.parse().ok()?, canonical))
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub uid: u32,
    pub gids: &'a [u32],
    pub admin: bool,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OwnerError {
    #[error(
        "{tag} belongs to {}: only its owner or an admin may change its ACL \
         (a pull without --user/--group refreshes it and keeps its ACL); \
         for a copy with an ACL of your own run `shifterimg pull --private [--user LIST] [--group LIST] {tag}`",
        owner_name(*.owner)
    )]
    AclChange { tag: String, owner: Option<u32> },
    #[error(
        "{tag} is restricted and uid {uid} is not in its ACL; ask its owner ({}) to add you, \
         or pull a copy of your own with `shifterimg pull --private {tag}`",
        owner_name(*.owner)
    )]
    NotAdmitted {
        tag: String,
        uid: u32,
        owner: Option<u32>,
    },
    #[error(
        "custom:{name} was imported by {}: only its owner or an admin may replace it; \
         import under another name",
        owner_name(*.owner)
    )]
    Overwrite { name: String, owner: Option<u32> },
}

fn owner_name(owner: Option<u32>) -> String {
    match owner {
        Some(uid) => format!("uid {uid}"),
        None => "the site's admins".to_owned(),
    }
}

/// What a pull ends up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullDecision {
    pub acl: ImageAcl,
    pub owner: Option<u32>,
}

/// The ACL and owner a pull of a tag by `actor` asking for `requested` (public
/// when no `--user`/`--group` was given) leads to, given the tag's row.
/// `tag` names the tag in messages.
pub fn decide_pull(
    previous: Option<&StoredImage>,
    actor: Actor<'_>,
    requested: &ImageAcl,
    tag: &str,
) -> Result<PullDecision, OwnerError> {
    let first = PullDecision {
        acl: requested.clone(),
        owner: Some(actor.uid),
    };
    let Some(prev) = previous else {
        return Ok(first);
    };
    // A tag whose pulls all failed was never usable: nobody relies on its ACL,
    // and keeping it would let anyone reserve a name with a bad first pull.
    if !prev.is_published() && prev.status == ImageStatus::Failure {
        return Ok(first);
    }
    if actor.admin || prev.owner_uid == Some(actor.uid) {
        return Ok(PullDecision {
            acl: requested.clone(),
            owner: prev.owner_uid,
        });
    }
    let current = prev
        .meta
        .as_ref()
        .filter(|_| prev.is_published())
        .map_or(&prev.acl, |m| &m.acl);
    if !current.admits(actor.uid, actor.gids) {
        return Err(OwnerError::NotAdmitted {
            tag: tag.to_owned(),
            uid: actor.uid,
            owner: prev.owner_uid,
        });
    }
    if !requested.is_public() && requested != current {
        return Err(OwnerError::AclChange {
            tag: tag.to_owned(),
            owner: prev.owner_uid,
        });
    }
    Ok(PullDecision {
        acl: current.clone(),
        owner: prev.owner_uid,
    })
}

/// The owner of `custom:name` after an import by `actor`, or why it may not
/// replace the image there.
pub fn decide_import(
    previous: Option<&StoredImage>,
    actor: Actor<'_>,
    name: &str,
) -> Result<Option<u32>, OwnerError> {
    match previous {
        None => Ok(Some(actor.uid)),
        Some(p) if actor.admin || p.owner_uid == Some(actor.uid) => Ok(p.owner_uid),
        Some(p) => Err(OwnerError::Overwrite {
            name: name.to_owned(),
            owner: p.owner_uid,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ImageKey;
    use shifter_api::ImageMeta;

    const OWNER: u32 = 1001;
    const OTHER: u32 = 1002;

    fn user(uid: u32) -> Actor<'static> {
        Actor {
            uid,
            gids: &[],
            admin: false,
        }
    }

    fn acl(uids: &[u32], gids: &[u32]) -> ImageAcl {
        ImageAcl {
            uids: uids.to_vec(),
            gids: gids.to_vec(),
        }
    }

    fn published(owner: Option<u32>, a: ImageAcl) -> StoredImage {
        let key = ImageKey {
            system: "s".into(),
            itype: "docker".into(),
            tag: "r/x:1".into(),
        };
        let mut row = StoredImage::new_job(key, a.clone(), 0);
        row.id = "a".repeat(64);
        row.status = ImageStatus::Ready;
        row.owner_uid = owner;
        row.meta = Some(ImageMeta {
            id: row.id.clone(),
            acl: a,
            ..Default::default()
        });
        row
    }

    #[test]
    fn the_first_puller_owns_the_tag_with_the_acl_they_ask_for() {
        let d = decide_pull(None, user(OTHER), &acl(&[OTHER], &[]), "t").unwrap();
        assert_eq!(d.owner, Some(OTHER));
        assert_eq!(d.acl, acl(&[OTHER], &[]));
    }

    #[test]
    fn another_users_private_repull_of_a_public_tag_is_refused() {
        let row = published(Some(OWNER), ImageAcl::default());
        let e = decide_pull(Some(&row), user(OTHER), &acl(&[OTHER], &[]), "t").unwrap_err();
        assert_eq!(
            e,
            OwnerError::AclChange {
                tag: "t".into(),
                owner: Some(OWNER)
            }
        );
        let msg = e.to_string();
        assert!(msg.contains("only its owner or an admin"), "{msg}");
        assert!(msg.contains("--private"), "{msg}");
    }

    #[test]
    fn another_users_plain_repull_keeps_the_acl() {
        let row = published(Some(OWNER), acl(&[OWNER], &[50]));
        let member = Actor {
            uid: OTHER,
            gids: &[50],
            admin: false,
        };
        let d = decide_pull(Some(&row), member, &ImageAcl::default(), "t").unwrap();
        assert_eq!(d.acl, acl(&[OWNER], &[50]), "not widened to public");
        assert_eq!(d.owner, Some(OWNER));
        let e = decide_pull(Some(&row), member, &acl(&[OWNER], &[50, 51]), "t");
        assert!(matches!(e, Err(OwnerError::AclChange { .. })), "{e:?}");
    }

    #[test]
    fn users_outside_a_private_tag_are_refused_and_told_about_private_copies() {
        let row = published(Some(OWNER), acl(&[OWNER], &[]));
        let e = decide_pull(Some(&row), user(OTHER), &ImageAcl::default(), "t").unwrap_err();
        assert!(matches!(e, OwnerError::NotAdmitted { uid: OTHER, .. }));
        assert!(e.to_string().contains("--private"), "{e}");
    }

    #[test]
    fn the_owner_and_admins_change_the_acl_and_the_owner_stays() {
        let row = published(Some(OWNER), ImageAcl::default());
        let d = decide_pull(Some(&row), user(OWNER), &acl(&[OWNER], &[]), "t").unwrap();
        assert_eq!((d.acl, d.owner), (acl(&[OWNER], &[]), Some(OWNER)));
        let admin = Actor {
            uid: 0,
            gids: &[],
            admin: true,
        };
        let d = decide_pull(Some(&row), admin, &acl(&[0], &[]), "t").unwrap();
        assert_eq!((d.acl, d.owner), (acl(&[0], &[]), Some(OWNER)));
    }

    #[test]
    fn legacy_tags_without_owner_belong_to_the_admins() {
        let row = published(None, ImageAcl::default());
        let e = decide_pull(Some(&row), user(OTHER), &acl(&[OTHER], &[]), "t").unwrap_err();
        assert!(e.to_string().contains("the site's admins"), "{e}");
    }

    #[test]
    fn a_tag_whose_pulls_all_failed_can_be_claimed() {
        let mut row = published(Some(OWNER), acl(&[OWNER], &[]));
        row.meta = None;
        row.id.clear();
        row.status = ImageStatus::Failure;
        let d = decide_pull(Some(&row), user(OTHER), &ImageAcl::default(), "t").unwrap();
        assert_eq!((d.acl, d.owner), (ImageAcl::default(), Some(OTHER)));
        row.status = ImageStatus::Pulling;
        assert!(decide_pull(Some(&row), user(OTHER), &ImageAcl::default(), "t").is_err());
    }

    #[test]
    fn importers_cannot_replace_each_others_custom_images() {
        let row = published(Some(OWNER), ImageAcl::default());
        assert_eq!(decide_import(None, user(OTHER), "n"), Ok(Some(OTHER)));
        assert_eq!(decide_import(Some(&row), user(OWNER), "n"), Ok(Some(OWNER)));
        let e = decide_import(Some(&row), user(OTHER), "n").unwrap_err();
        assert!(
            e.to_string().contains("custom:n was imported by uid 1001"),
            "{e}"
        );
        let legacy = published(None, ImageAcl::default());
        assert!(decide_import(Some(&legacy), user(OWNER), "n").is_err());
    }

    #[test]
    fn private_tags_round_trip_and_never_look_like_docker_references() {
        let t = private_tag(1001, "docker.io/library/busybox:latest");
        assert_eq!(
            split_private(&t),
            Some((1001, "docker.io/library/busybox:latest"))
        );
        assert_eq!(split_private("docker.io/library/busybox:latest"), None);
        assert!(shifter_api::DockerRef::parse(&t).is_err());
    }
}
