//! Image records behind one trait: embedded SQLite by default, PostgreSQL for
//! sites running several gateway replicas. A record holds the job state of the
//! latest pull of a tag and the image currently published for it; replacing
//! the published id is a single-row write, so tag → id changes atomically.

use async_trait::async_trait;
use shifter_api::{ImageAcl, ImageMeta, ImageStatus};
use thiserror::Error;

mod cached;
mod postgres;
mod sqlite;

pub use cached::CachedStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("sqlite store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres store: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("store holds an unreadable row for {key}: {why}")]
    Corrupt { key: String, why: String },
    #[error("store task failed: {0}")]
    Task(String),
    #[error("cannot open store at {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
}

/// What a user names: a system, an image type and a (canonical) tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageKey {
    pub system: String,
    pub itype: String,
    pub tag: String,
}

impl std::fmt::Display for ImageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.system, self.itype, self.tag)
    }
}

/// One row: the latest job for a tag and what is published for it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredImage {
    pub key: ImageKey,
    /// Id of the published image; empty while nothing is published.
    pub id: String,
    /// State of the latest pull job.
    pub status: ImageStatus,
    pub status_message: String,
    /// ACL requested by the latest pull (the published one is `meta.acl`).
    pub acl: ImageAcl,
    /// Metadata of the published image.
    pub meta: Option<ImageMeta>,
    /// Seconds since the epoch of the last successful pull.
    pub last_pull: i64,
    /// Seconds since the epoch of the last change.
    pub updated: i64,
    /// The gateway instance (host) running the latest job; a restarting
    /// gateway fails only its own interrupted jobs, not other replicas'.
    /// Stored in the `owner` column, its name before tags had owners.
    pub replica: String,
    /// The user who owns the tag (first puller or importer): only they and
    /// the admins change its ACL or replace a `custom:` image. `None` for rows
    /// from before owners were recorded whose owner could not be inferred;
    /// those belong to the admins (see `legacy_owner`).
    pub owner_uid: Option<u32>,
}

impl StoredImage {
    pub fn new_job(key: ImageKey, acl: ImageAcl, now: i64) -> StoredImage {
        StoredImage {
            key,
            id: String::new(),
            status: ImageStatus::Pending,
            status_message: String::new(),
            acl,
            meta: None,
            last_pull: 0,
            updated: now,
            replica: String::new(),
            owner_uid: None,
        }
    }

    pub fn is_published(&self) -> bool {
        self.meta.is_some() && !self.id.is_empty()
    }
}

#[async_trait]
pub trait Store: Send + Sync {
    async fn get(&self, key: &ImageKey) -> Result<Option<StoredImage>, StoreError>;
    /// Inserts or replaces the row for `image.key`.
    async fn put(&self, image: &StoredImage) -> Result<(), StoreError>;
    /// Removes the row; false when there was none.
    async fn delete(&self, key: &ImageKey) -> Result<bool, StoreError>;
    async fn list(&self, system: &str) -> Result<Vec<StoredImage>, StoreError>;
    /// The rows of `system` whose published or last id is `id`, by index.
    async fn with_id(&self, system: &str, id: &str) -> Result<Vec<StoredImage>, StoreError>;
    /// Marks every job of gateway instance `replica` that is not final as
    /// FAILURE with `message` (after a restart nothing of it is running any
    /// more) and returns their keys.
    async fn fail_in_flight(
        &self,
        message: &str,
        replica: &str,
    ) -> Result<Vec<ImageKey>, StoreError>;
    /// Stores (replaces) a user's credentials for a registry.
    async fn put_login(&self, login: &RegistryLogin) -> Result<(), StoreError>;
    async fn get_login(
        &self,
        system: &str,
        uid: u32,
        registry: &str,
    ) -> Result<Option<RegistryLogin>, StoreError>;
}

/// Registry credentials a user stored with `shifterimg login`, used for that
/// user's pulls from that registry. Debug output hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    pub system: String,
    pub uid: u32,
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("system", &self.system)
            .field("uid", &self.uid)
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Column values shared by both backends.
pub(crate) struct Row {
    pub system: String,
    pub itype: String,
    pub tag: String,
    pub id: String,
    pub status: String,
    pub status_message: String,
    pub acl: String,
    pub meta: Option<String>,
    pub last_pull: i64,
    pub updated: i64,
    /// Column `owner`: the replica (see `StoredImage::replica`).
    pub replica: String,
    pub owner_uid: Option<i64>,
}

impl Row {
    pub fn from_image(i: &StoredImage) -> Row {
        Row {
            system: i.key.system.clone(),
            itype: i.key.itype.clone(),
            tag: i.key.tag.clone(),
            id: i.id.clone(),
            status: i.status.as_str().to_owned(),
            status_message: i.status_message.clone(),
            acl: serde_json::to_string(&i.acl).expect("ACL serialises"),
            meta: i
                .meta
                .as_ref()
                .map(|m| serde_json::to_string(m).expect("meta serialises")),
            last_pull: i.last_pull,
            updated: i.updated,
            replica: i.replica.clone(),
            owner_uid: i.owner_uid.map(i64::from),
        }
    }

    pub fn into_image(self) -> Result<StoredImage, StoreError> {
        let key = ImageKey {
            system: self.system,
            itype: self.itype,
            tag: self.tag,
        };
        let corrupt = |why: String| StoreError::Corrupt {
            key: key.to_string(),
            why,
        };
        let status = ImageStatus::parse(&self.status)
            .ok_or_else(|| corrupt(format!("unknown status {:?}", self.status)))?;
        let acl = serde_json::from_str(&self.acl).map_err(|e| corrupt(format!("acl: {e}")))?;
        let meta = match self.meta {
            Some(m) => Some(serde_json::from_str(&m).map_err(|e| corrupt(format!("meta: {e}")))?),
            None => None,
        };
        let owner_uid = match self.owner_uid {
            Some(u) => {
                Some(u32::try_from(u).map_err(|_| corrupt(format!("owner_uid {u} is not a uid")))?)
            }
            None => None,
        };
        Ok(StoredImage {
            key,
            id: self.id,
            status,
            status_message: self.status_message,
            acl,
            meta,
            last_pull: self.last_pull,
            updated: self.updated,
            replica: self.replica,
            owner_uid,
        })
    }
}

/// The owner given to a row written before owners were recorded: the one uid
/// of a private ACL without groups (the puller was always added to a private
/// ACL, so a single uid was whoever last set it); anyone else's rows, public
/// ones included, belong to the admins (`None`), so no user can claim a
/// site's existing images by re-pulling them.
pub(crate) fn legacy_owner(acl_json: &str) -> Option<u32> {
    let acl: ImageAcl = serde_json::from_str(acl_json).ok()?;
    match (acl.uids.as_slice(), acl.gids.is_empty()) {
        ([only], true) => Some(*only),
        _ => None,
    }
}

pub(crate) const IN_FLIGHT: [&str; 4] = ["PENDING", "PULLING", "CONVERSION", "TRANSFER"];

/// Behaviour every backend must show; run by each backend's tests.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    fn key(tag: &str) -> ImageKey {
        ImageKey {
            system: "sys".into(),
            itype: "docker".into(),
            tag: tag.into(),
        }
    }

    pub async fn check(store: &dyn Store) {
        assert_eq!(store.get(&key("a")).await.unwrap(), None);

        let mut a = StoredImage::new_job(key("a"), ImageAcl::default(), 10);
        store.put(&a).await.unwrap();
        assert_eq!(store.get(&key("a")).await.unwrap().as_ref(), Some(&a));

        a.id = "f".repeat(64);
        a.status = ImageStatus::Ready;
        a.acl = ImageAcl {
            uids: vec![1001],
            gids: vec![],
        };
        a.meta = Some(ImageMeta {
            id: a.id.clone(),
            format: "squashfs".into(),
            itype: "docker".into(),
            env: vec!["PATH=/bin".into()],
            acl: a.acl.clone(),
            ..Default::default()
        });
        a.last_pull = 20;
        store.put(&a).await.unwrap();
        assert_eq!(
            store.get(&key("a")).await.unwrap().as_ref(),
            Some(&a),
            "replaced in place"
        );

        let mut owned = StoredImage::new_job(key("o"), ImageAcl::default(), 10);
        owned.owner_uid = Some(u32::MAX);
        store.put(&owned).await.unwrap();
        assert_eq!(
            store.get(&key("o")).await.unwrap().unwrap().owner_uid,
            Some(u32::MAX),
            "every uid round-trips"
        );
        owned.owner_uid = None;
        store.put(&owned).await.unwrap();
        assert_eq!(store.get(&key("o")).await.unwrap().unwrap().owner_uid, None);
        store.delete(&key("o")).await.unwrap();

        let mut b = StoredImage::new_job(key("b"), ImageAcl::default(), 11);
        b.replica = "me".into();
        store.put(&b).await.unwrap();
        let mut other = StoredImage::new_job(key("c"), ImageAcl::default(), 12);
        other.key.system = "elsewhere".into();
        other.replica = "me".into();
        store.put(&other).await.unwrap();
        let mut replica = StoredImage::new_job(key("r"), ImageAcl::default(), 12);
        replica.replica = "another-replica".into();
        store.put(&replica).await.unwrap();

        let list = store.list("sys").await.unwrap();
        assert_eq!(list.len(), 3, "list is per system: {list:?}");
        let by_id = store.with_id("sys", &"f".repeat(64)).await.unwrap();
        assert_eq!(by_id.len(), 1, "{by_id:?}");
        assert_eq!(by_id[0].key, key("a"));
        assert!(store
            .with_id("elsewhere", &"f".repeat(64))
            .await
            .unwrap()
            .is_empty());

        let failed = store.fail_in_flight("interrupted", "me").await.unwrap();
        assert_eq!(failed.len(), 2, "b and c were in flight: {failed:?}");
        let r_now = store.get(&key("r")).await.unwrap().unwrap();
        assert_eq!(
            r_now.status,
            ImageStatus::Pending,
            "another replica's job is left alone"
        );
        store.delete(&key("r")).await.unwrap();
        let b_now = store.get(&key("b")).await.unwrap().unwrap();
        assert_eq!(b_now.status, ImageStatus::Failure);
        assert_eq!(b_now.status_message, "interrupted");
        assert!(b_now.updated > 11, "the failure time is recorded");
        let a_now = store.get(&key("a")).await.unwrap().unwrap();
        assert_eq!(a_now.status, ImageStatus::Ready, "READY rows are untouched");

        let login = RegistryLogin {
            system: "sys".into(),
            uid: 1001,
            registry: "reg:5000".into(),
            username: "alice".into(),
            password: "s3cret".into(),
        };
        assert_eq!(
            store.get_login("sys", 1001, "reg:5000").await.unwrap(),
            None
        );
        store.put_login(&login).await.unwrap();
        let mut changed = login.clone();
        changed.password = "new".into();
        store.put_login(&changed).await.unwrap();
        assert_eq!(
            store.get_login("sys", 1001, "reg:5000").await.unwrap(),
            Some(changed)
        );
        assert_eq!(
            store.get_login("sys", 1002, "reg:5000").await.unwrap(),
            None,
            "per user"
        );
        assert!(!format!("{login:?}").contains("s3cret"));

        assert!(store.delete(&key("b")).await.unwrap());
        assert!(!store.delete(&key("b")).await.unwrap());
        assert_eq!(store.get(&key("b")).await.unwrap(), None);
    }
}
