//! A read-through cache in front of a store, for the lookup hot path. Every
//! write through this gateway updates the cache, so with SQLite (one gateway,
//! the only writer) it is always current; with PostgreSQL other replicas may
//! write too, so entries expire after a short time.
//!
//! Rows that exist are cached as the store holds them (as many as the store
//! has). Misses are what users choose, any number of distinct names: they are
//! kept in a bounded LRU whose entries also expire, so unknown names cost
//! bounded memory whatever is asked (3,000 distinct unknown tags once took an
//! unbounded cache from 21 MB to 231 MB).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hashlink::LruCache;

use super::{ImageKey, RegistryLogin, Store, StoreError, StoredImage};

/// Misses remembered at most. A key is bounded by the reference limits
/// (255 + 128 characters, see `shifter_api::reference`), so this is at most a
/// couple of MB; beyond it the least recently asked are forgotten.
pub const MAX_MISSES: usize = 4096;
/// How long a miss is believed, even with this gateway the only writer (its
/// own writes clear it at once): a miss saved a store query, nothing more.
pub const MISS_TTL: Duration = Duration::from_secs(60);

pub struct CachedStore {
    inner: Arc<dyn Store>,
    ttl: Option<Duration>,
    rows: RwLock<HashMap<ImageKey, (Instant, StoredImage)>>,
    /// Keys the store had no row for, and when it said so. A `Mutex`: a hit
    /// moves the key to the front.
    misses: Mutex<LruCache<ImageKey, Instant>>,
    miss_ttl: Duration,
}

impl CachedStore {
    /// `ttl: None` when this gateway is the store's only writer.
    pub fn new(inner: Arc<dyn Store>, ttl: Option<Duration>) -> CachedStore {
        Self::with_miss_limits(inner, ttl, MAX_MISSES, MISS_TTL)
    }

    /// [`CachedStore::new`] with other bounds for the misses (tests).
    pub fn with_miss_limits(
        inner: Arc<dyn Store>,
        ttl: Option<Duration>,
        max_misses: usize,
        miss_ttl: Duration,
    ) -> CachedStore {
        CachedStore {
            inner,
            miss_ttl: ttl.map_or(miss_ttl, |t| t.min(miss_ttl)),
            ttl,
            rows: RwLock::new(HashMap::new()),
            misses: Mutex::new(LruCache::new(max_misses.max(1))),
        }
    }

    fn remember(&self, key: &ImageKey, row: Option<StoredImage>) {
        let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows = self.rows.write().unwrap_or_else(|p| p.into_inner());
        match row {
            Some(row) => {
                misses.remove(key);
                rows.insert(key.clone(), (Instant::now(), row));
            }
            None => {
                rows.remove(key);
                // Past the capacity, the least recently used miss goes.
                misses.insert(key.clone(), Instant::now());
            }
        }
    }

    fn forget_all(&self) {
        self.misses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.rows.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Misses held now (at most the capacity).
    pub fn misses_held(&self) -> usize {
        self.misses.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The cached answer for `key`, if there is a fresh one.
    fn cached(&self, key: &ImageKey) -> Option<Option<StoredImage>> {
        {
            let rows = self.rows.read().unwrap_or_else(|p| p.into_inner());
            if let Some((at, row)) = rows.get(key) {
                if self.ttl.is_none_or(|ttl| at.elapsed() < ttl) {
                    return Some(Some(row.clone()));
                }
            }
        }
        let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
        match misses.get(key) {
            Some(at) if at.elapsed() < self.miss_ttl => Some(None),
            Some(_) => {
                misses.remove(key);
                None
            }
            None => None,
        }
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn get(&self, key: &ImageKey) -> Result<Option<StoredImage>, StoreError> {
        if let Some(answer) = self.cached(key) {
            return Ok(answer);
        }
        let row = self.inner.get(key).await?;
        self.remember(key, row.clone());
        Ok(row)
    }

    async fn put(&self, image: &StoredImage) -> Result<(), StoreError> {
        let result = self.inner.put(image).await;
        match &result {
            Ok(()) => self.remember(&image.key, Some(image.clone())),
            // The write may or may not have happened: ask the store next time.
            Err(_) => self.forget_all(),
        }
        result
    }

    async fn delete(&self, key: &ImageKey) -> Result<bool, StoreError> {
        let result = self.inner.delete(key).await;
        self.forget_all();
        result
    }

    async fn list(&self, system: &str) -> Result<Vec<StoredImage>, StoreError> {
        self.inner.list(system).await
    }

    async fn with_id(&self, system: &str, id: &str) -> Result<Vec<StoredImage>, StoreError> {
        self.inner.with_id(system, id).await
    }

    async fn fail_in_flight(
        &self,
        message: &str,
        replica: &str,
    ) -> Result<Vec<ImageKey>, StoreError> {
        let result = self.inner.fail_in_flight(message, replica).await;
        self.forget_all();
        result
    }

    async fn put_login(&self, login: &RegistryLogin) -> Result<(), StoreError> {
        self.inner.put_login(login).await
    }

    async fn get_login(
        &self,
        system: &str,
        uid: u32,
        registry: &str,
    ) -> Result<Option<RegistryLogin>, StoreError> {
        self.inner.get_login(system, uid, registry).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    #[tokio::test]
    async fn cached_store_keeps_the_store_contract() {
        let inner = Arc::new(SqliteStore::in_memory().unwrap());
        let store = CachedStore::new(inner, None);
        crate::store::contract::check(&store).await;
    }

    #[tokio::test]
    async fn other_writers_are_seen_after_the_ttl() {
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let store = CachedStore::new(inner.clone(), Some(Duration::from_millis(50)));
        let key = ImageKey {
            system: "s".into(),
            itype: "docker".into(),
            tag: "t".into(),
        };
        assert_eq!(store.get(&key).await.unwrap(), None);
        // Another replica writes directly to the shared store.
        inner
            .put(&StoredImage::new_job(key.clone(), Default::default(), 1))
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap(), None, "cached miss");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            store.get(&key).await.unwrap().is_some(),
            "seen after the ttl"
        );
    }

    fn key(tag: &str) -> ImageKey {
        ImageKey {
            system: "s".into(),
            itype: "docker".into(),
            tag: tag.into(),
        }
    }

    #[tokio::test]
    async fn misses_are_an_lru_bounded_in_number_whatever_is_asked() {
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let store = CachedStore::with_miss_limits(inner, None, 100, Duration::from_secs(60));
        for i in 0..20_000 {
            assert_eq!(
                store.get(&key(&format!("unknown-{i}"))).await.unwrap(),
                None
            );
        }
        assert_eq!(store.misses_held(), 100, "only the last 100 are kept");

        // Recently asked misses survive; the least recently asked go first.
        store.get(&key("unknown-19900")).await.unwrap();
        store.get(&key("fresh")).await.unwrap();
        let misses = store.misses.lock().unwrap();
        assert!(misses.contains_key(&key("unknown-19900")));
        assert!(misses.contains_key(&key("fresh")));
        assert!(
            !misses.contains_key(&key("unknown-19901")),
            "the LRU one went"
        );
    }

    #[tokio::test]
    async fn a_miss_expires_and_a_write_through_this_gateway_replaces_it_at_once() {
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let store =
            CachedStore::with_miss_limits(inner.clone(), None, 100, Duration::from_millis(50));
        assert_eq!(store.get(&key("a")).await.unwrap(), None);
        store
            .put(&StoredImage::new_job(key("a"), Default::default(), 1))
            .await
            .unwrap();
        assert!(store.get(&key("a")).await.unwrap().is_some(), "own write");
        assert_eq!(store.misses_held(), 0);

        // Written behind the cache's back (another replica): seen once the
        // miss has expired, even with no ttl for rows.
        assert_eq!(store.get(&key("b")).await.unwrap(), None);
        inner
            .put(&StoredImage::new_job(key("b"), Default::default(), 1))
            .await
            .unwrap();
        assert_eq!(store.get(&key("b")).await.unwrap(), None, "cached miss");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(store.get(&key("b")).await.unwrap().is_some());
    }
}
