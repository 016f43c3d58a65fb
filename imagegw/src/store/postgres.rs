//! The PostgreSQL store, for sites running several gateway replicas against one
//! database. Same rows as the SQLite store; each write is one statement, so
//! replicas never see half an update.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::{Client, NoTls};

use super::{ImageKey, RegistryLogin, Row, StoreError, StoredImage, IN_FLIGHT};

pub struct PostgresStore {
    client: Arc<Client>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    system TEXT NOT NULL,
    itype TEXT NOT NULL,
    tag TEXT NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT NOT NULL,
    acl TEXT NOT NULL,
    meta TEXT,
    last_pull BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (system, itype, tag)
);
CREATE TABLE IF NOT EXISTS registry_logins (
    system TEXT NOT NULL,
    uid BIGINT NOT NULL,
    registry TEXT NOT NULL,
    username TEXT NOT NULL,
    password TEXT NOT NULL,
    PRIMARY KEY (system, uid, registry)
);
-- Lookups by id (`id:<hex>`, and every node pinned to one) without a scan.
CREATE INDEX IF NOT EXISTS images_by_id ON images (system, id);";

const COLUMNS: &str =
    "system, itype, tag, id, status, status_message, acl, meta, last_pull, updated, owner";

impl PostgresStore {
    /// Connects (without TLS: put the database on loopback or a trusted network)
    /// and creates the table if needed.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::error!(error = %e, "postgres connection lost");
            }
        });
        client.batch_execute(SCHEMA).await?;
        // Databases written by an older gateway lack the owner column.
        client
            .batch_execute(
                "ALTER TABLE images ADD COLUMN IF NOT EXISTS owner TEXT NOT NULL DEFAULT ''",
            )
            .await?;
        Ok(PostgresStore {
            client: Arc::new(client),
        })
    }
}

fn read_row(r: &tokio_postgres::Row) -> Row {
    Row {
        system: r.get(0),
        itype: r.get(1),
        tag: r.get(2),
        id: r.get(3),
        status: r.get(4),
        status_message: r.get(5),
        acl: r.get(6),
        meta: r.get(7),
        last_pull: r.get(8),
        updated: r.get(9),
        owner: r.get(10),
    }
}

#[async_trait]
impl super::Store for PostgresStore {
    async fn get(&self, key: &ImageKey) -> Result<Option<StoredImage>, StoreError> {
        let row = self
            .client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM images WHERE system=$1 AND itype=$2 AND tag=$3"),
                &[&key.system, &key.itype, &key.tag],
            )
            .await?;
        row.map(|r| read_row(&r).into_image()).transpose()
    }

    async fn put(&self, image: &StoredImage) -> Result<(), StoreError> {
        let r = Row::from_image(image);
        self.client
            .execute(
                &format!(
                    "INSERT INTO images ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)
                     ON CONFLICT (system, itype, tag) DO UPDATE SET
                       id=EXCLUDED.id, status=EXCLUDED.status,
                       status_message=EXCLUDED.status_message, acl=EXCLUDED.acl,
                       meta=EXCLUDED.meta, last_pull=EXCLUDED.last_pull,
                       updated=EXCLUDED.updated, owner=EXCLUDED.owner"
                ),
                &[
                    &r.system,
                    &r.itype,
                    &r.tag,
                    &r.id,
                    &r.status,
                    &r.status_message,
                    &r.acl,
                    &r.meta,
                    &r.last_pull,
                    &r.updated,
                    &r.owner,
                ],
            )
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &ImageKey) -> Result<bool, StoreError> {
        let n = self
            .client
            .execute(
                "DELETE FROM images WHERE system=$1 AND itype=$2 AND tag=$3",
                &[&key.system, &key.itype, &key.tag],
            )
            .await?;
        Ok(n > 0)
    }

    async fn list(&self, system: &str) -> Result<Vec<StoredImage>, StoreError> {
        let rows = self
            .client
            .query(
                &format!("SELECT {COLUMNS} FROM images WHERE system=$1 ORDER BY itype, tag"),
                &[&system],
            )
            .await?;
        rows.iter().map(|r| read_row(r).into_image()).collect()
    }

    async fn with_id(&self, system: &str, id: &str) -> Result<Vec<StoredImage>, StoreError> {
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM images WHERE system=$1 AND id=$2 ORDER BY itype, tag"
                ),
                &[&system, &id],
            )
            .await?;
        rows.iter().map(|r| read_row(r).into_image()).collect()
    }

    async fn fail_in_flight(
        &self,
        message: &str,
        owner: &str,
    ) -> Result<Vec<ImageKey>, StoreError> {
        let in_flight: Vec<&str> = IN_FLIGHT.to_vec();
        let rows = self
            .client
            .query(
                "UPDATE images SET status='FAILURE', status_message=$2, updated=$3
                 WHERE status = ANY($1) AND owner=$4 RETURNING system, itype, tag",
                &[&in_flight, &message, &crate::state::now(), &owner],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ImageKey {
                system: r.get(0),
                itype: r.get(1),
                tag: r.get(2),
            })
            .collect())
    }

    async fn put_login(&self, l: &RegistryLogin) -> Result<(), StoreError> {
        let uid = i64::from(l.uid);
        self.client
            .execute(
                "INSERT INTO registry_logins (system, uid, registry, username, password)
                 VALUES ($1,$2,$3,$4,$5)
                 ON CONFLICT (system, uid, registry) DO UPDATE SET
                   username=EXCLUDED.username, password=EXCLUDED.password",
                &[&l.system, &uid, &l.registry, &l.username, &l.password],
            )
            .await?;
        Ok(())
    }

    async fn get_login(
        &self,
        system: &str,
        uid: u32,
        registry: &str,
    ) -> Result<Option<RegistryLogin>, StoreError> {
        let uid64 = i64::from(uid);
        let row = self
            .client
            .query_opt(
                "SELECT username, password FROM registry_logins
                 WHERE system=$1 AND uid=$2 AND registry=$3",
                &[&system, &uid64, &registry],
            )
            .await?;
        Ok(row.map(|r| RegistryLogin {
            system: system.to_owned(),
            uid,
            registry: registry.to_owned(),
            username: r.get(0),
            password: r.get(1),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::postgres::TestPostgres;

    #[tokio::test]
    async fn postgres_store_keeps_the_store_contract() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let store = PostgresStore::connect(&pg.url()).await.unwrap();
        crate::store::contract::check(&store).await;
        // A second replica sees the first one's rows.
        let replica = PostgresStore::connect(&pg.url()).await.unwrap();
        use crate::store::Store;
        assert_eq!(replica.list("sys").await.unwrap().len(), 1);
    }
}
