//! The PostgreSQL store, for sites running several gateway replicas against one
//! database. Same rows as the SQLite store; each write is one statement, so
//! replicas never see half an update.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::{Client, NoTls};

use super::{legacy_owner, ImageKey, RegistryLogin, Row, StoreError, StoredImage, IN_FLIGHT};

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
    owner_uid BIGINT,
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
    "system, itype, tag, id, status, status_message, acl, meta, last_pull, updated, owner, owner_uid";

impl PostgresStore {
    /// Connects (without TLS: put the database on loopback or a trusted network)
    /// and creates the table if needed.
    pub async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
        let (mut client, conn) = tokio_postgres::connect(url, NoTls).await?;
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
        migrate_owner_uid(&mut client).await?;
        Ok(PostgresStore {
            client: Arc::new(client),
        })
    }
}

/// Adds `owner_uid` to a database from before owners, inferring each row's
/// owner once (`legacy_owner`), in one transaction so no replica ever sees the
/// column without the inferred owners. Replicas starting together may both
/// run it; the second one's ALTER waits for the first's lock, then finds the
/// column and changes nothing.
async fn migrate_owner_uid(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    // Serialises concurrent replicas: the check below then sees the winner's column.
    tx.batch_execute("LOCK TABLE images IN ACCESS EXCLUSIVE MODE")
        .await?;
    let present = tx
        .query_opt(
            "SELECT 1 FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'images'
               AND column_name = 'owner_uid'",
            &[],
        )
        .await?
        .is_some();
    if present {
        return Ok(tx.commit().await?);
    }
    tx.batch_execute("ALTER TABLE images ADD COLUMN owner_uid BIGINT")
        .await?;
    let rows = tx
        .query("SELECT system, itype, tag, acl FROM images", &[])
        .await?;
    for r in rows {
        let acl: String = r.get(3);
        if let Some(uid) = legacy_owner(&acl) {
            let (system, itype, tag): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            tx.execute(
                "UPDATE images SET owner_uid=$4 WHERE system=$1 AND itype=$2 AND tag=$3",
                &[&system, &itype, &tag, &i64::from(uid)],
            )
            .await?;
        }
    }
    Ok(tx.commit().await?)
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
        replica: r.get(10),
        owner_uid: r.get(11),
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
                    "INSERT INTO images ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
                     ON CONFLICT (system, itype, tag) DO UPDATE SET
                       id=EXCLUDED.id, status=EXCLUDED.status,
                       status_message=EXCLUDED.status_message, acl=EXCLUDED.acl,
                       meta=EXCLUDED.meta, last_pull=EXCLUDED.last_pull,
                       updated=EXCLUDED.updated, owner=EXCLUDED.owner,
                       owner_uid=EXCLUDED.owner_uid"
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
                    &r.replica,
                    &r.owner_uid,
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
        replica: &str,
    ) -> Result<Vec<ImageKey>, StoreError> {
        let in_flight: Vec<&str> = IN_FLIGHT.to_vec();
        let rows = self
            .client
            .query(
                "UPDATE images SET status='FAILURE', status_message=$2, updated=$3
                 WHERE status = ANY($1) AND owner=$4 RETURNING system, itype, tag",
                &[&in_flight, &message, &crate::state::now(), &replica],
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

    #[tokio::test]
    async fn a_postgres_database_from_before_owners_gets_owners_inferred_once() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        {
            let (client, conn) = tokio_postgres::connect(&pg.url(), NoTls).await.unwrap();
            tokio::spawn(conn);
            client
                .batch_execute(
                    "CREATE TABLE images (system TEXT NOT NULL, itype TEXT NOT NULL, tag TEXT NOT NULL,
                     id TEXT NOT NULL, status TEXT NOT NULL, status_message TEXT NOT NULL,
                     acl TEXT NOT NULL, meta TEXT, last_pull BIGINT NOT NULL, updated BIGINT NOT NULL,
                     owner TEXT NOT NULL DEFAULT '', PRIMARY KEY (system, itype, tag));
                     INSERT INTO images VALUES ('s','docker','public','','READY','','{\"uids\":[],\"gids\":[]}',NULL,0,0,'h');
                     INSERT INTO images VALUES ('s','docker','mine','','READY','','{\"uids\":[1001],\"gids\":[]}',NULL,0,0,'h');",
                )
                .await
                .unwrap();
        }
        use crate::store::Store;
        let key = |tag: &str| ImageKey {
            system: "s".into(),
            itype: "docker".into(),
            tag: tag.into(),
        };
        let store = PostgresStore::connect(&pg.url()).await.unwrap();
        let public = store.get(&key("public")).await.unwrap().unwrap();
        assert_eq!(public.owner_uid, None);
        assert_eq!(
            store.get(&key("mine")).await.unwrap().unwrap().owner_uid,
            Some(1001)
        );
        let mut narrowed = public;
        narrowed.acl.uids = vec![1002];
        store.put(&narrowed).await.unwrap();
        let again = PostgresStore::connect(&pg.url()).await.unwrap();
        assert_eq!(
            again.get(&key("public")).await.unwrap().unwrap().owner_uid,
            None,
            "inferred once, at the migration only"
        );
    }
}
