//! A read-through cache in front of a store, for the lookup hot path. Every
//! write through this gateway updates the cache, so with SQLite (one gateway,
//! the only writer) it is always current; with PostgreSQL other replicas may
//! write too, so entries expire after a short time.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{ImageKey, RegistryLogin, Store, StoreError, StoredImage};

pub struct CachedStore {
    inner: Arc<dyn Store>,
    ttl: Option<Duration>,
    rows: RwLock<HashMap<ImageKey, (Instant, Option<StoredImage>)>>,
}

impl CachedStore {
    /// `ttl: None` when this gateway is the store's only writer.
    pub fn new(inner: Arc<dyn Store>, ttl: Option<Duration>) -> CachedStore {
        CachedStore {
            inner,
            ttl,
            rows: RwLock::new(HashMap::new()),
        }
    }

    fn remember(&self, key: &ImageKey, row: Option<StoredImage>) {
        let mut rows = self.rows.write().unwrap_or_else(|p| p.into_inner());
        rows.insert(key.clone(), (Instant::now(), row));
    }

    fn forget_all(&self) {
        self.rows.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn get(&self, key: &ImageKey) -> Result<Option<StoredImage>, StoreError> {
        {
            let rows = self.rows.read().unwrap_or_else(|p| p.into_inner());
            if let Some((at, row)) = rows.get(key) {
                if self.ttl.is_none_or(|ttl| at.elapsed() < ttl) {
                    return Ok(row.clone());
                }
            }
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
}
