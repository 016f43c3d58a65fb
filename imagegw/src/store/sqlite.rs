//! The embedded store: one SQLite file in WAL mode with full fsync, so a
//! `kill -9` at any point leaves either the old or the new row. rusqlite is
//! blocking, so every call runs on tokio's blocking pool.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{legacy_owner, ImageKey, RegistryLogin, Row, StoreError, StoredImage, IN_FLIGHT};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
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
    last_pull INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    owner_uid INTEGER,
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

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        }
        // The store holds users' registry passwords: only the gateway reads it.
        // SQLite gives its -wal and -shm files the database file's mode.
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| StoreError::Open {
                    path: path.display().to_string(),
                    source,
                })?;
        }
        Self::init(Connection::open(path)?)
    }

    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite inconsistent
            // (it has its own transactions), so a poisoned lock is still usable.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn has_column(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare("SELECT 1 FROM pragma_table_info('images') WHERE name = ?1")?
        .exists([name])?)
}

/// Brings a database written by an older gateway up to the current schema.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    if !has_column(conn, "owner")? {
        conn.execute_batch("ALTER TABLE images ADD COLUMN owner TEXT NOT NULL DEFAULT ''")?;
    }
    if !has_column(conn, "owner_uid")? {
        // One transaction: a crash leaves either the old schema (migrated again
        // at the next start) or the new one with every owner inferred, never a
        // column of NULLs that would hand rows to the admins by accident.
        let tx = conn.transaction()?;
        tx.execute_batch("ALTER TABLE images ADD COLUMN owner_uid INTEGER")?;
        let rows: Vec<(String, String, String, String)> = {
            let mut stmt = tx.prepare("SELECT system, itype, tag, acl FROM images")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (system, itype, tag, acl) in rows {
            if let Some(uid) = legacy_owner(&acl) {
                tx.execute(
                    "UPDATE images SET owner_uid=?4 WHERE system=?1 AND itype=?2 AND tag=?3",
                    params![system, itype, tag, uid],
                )?;
            }
        }
        tx.commit()?;
    }
    Ok(())
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        system: r.get(0)?,
        itype: r.get(1)?,
        tag: r.get(2)?,
        id: r.get(3)?,
        status: r.get(4)?,
        status_message: r.get(5)?,
        acl: r.get(6)?,
        meta: r.get(7)?,
        last_pull: r.get(8)?,
        updated: r.get(9)?,
        replica: r.get(10)?,
        owner_uid: r.get(11)?,
    })
}

#[async_trait]
impl super::Store for SqliteStore {
    async fn get(&self, key: &ImageKey) -> Result<Option<StoredImage>, StoreError> {
        let key = key.clone();
        self.with(move |c| {
            let row = c
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM images WHERE system=?1 AND itype=?2 AND tag=?3"
                    ),
                    params![key.system, key.itype, key.tag],
                    read_row,
                )
                .optional()?;
            row.map(Row::into_image).transpose()
        })
        .await
    }

    async fn put(&self, image: &StoredImage) -> Result<(), StoreError> {
        let r = Row::from_image(image);
        self.with(move |c| {
            c.execute(
                &format!("INSERT OR REPLACE INTO images ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"),
                params![
                    r.system,
                    r.itype,
                    r.tag,
                    r.id,
                    r.status,
                    r.status_message,
                    r.acl,
                    r.meta,
                    r.last_pull,
                    r.updated,
                    r.replica,
                    r.owner_uid
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete(&self, key: &ImageKey) -> Result<bool, StoreError> {
        let key = key.clone();
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM images WHERE system=?1 AND itype=?2 AND tag=?3",
                params![key.system, key.itype, key.tag],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn list(&self, system: &str) -> Result<Vec<StoredImage>, StoreError> {
        let system = system.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM images WHERE system=?1 ORDER BY itype, tag"
            ))?;
            let rows = stmt.query_map(params![system], read_row)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(Row::into_image))
                .collect()
        })
        .await
    }

    async fn with_id(&self, system: &str, id: &str) -> Result<Vec<StoredImage>, StoreError> {
        let (system, id) = (system.to_owned(), id.to_owned());
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM images WHERE system=?1 AND id=?2 ORDER BY itype, tag"
            ))?;
            let rows = stmt.query_map(params![system, id], read_row)?;
            rows.map(|r| r.map_err(StoreError::from).and_then(Row::into_image))
                .collect()
        })
        .await
    }

    async fn fail_in_flight(
        &self,
        message: &str,
        replica: &str,
    ) -> Result<Vec<ImageKey>, StoreError> {
        let (message, replica) = (message.to_owned(), replica.to_owned());
        self.with(move |c| {
            let tx = c.transaction()?;
            let keys = {
                let mut stmt = tx.prepare(
                    "SELECT system, itype, tag FROM images WHERE status IN (?1,?2,?3,?4) AND owner=?5",
                )?;
                let rows = stmt.query_map(params![IN_FLIGHT[0], IN_FLIGHT[1], IN_FLIGHT[2], IN_FLIGHT[3], replica], |r| {
                    Ok(ImageKey {
                        system: r.get(0)?,
                        itype: r.get(1)?,
                        tag: r.get(2)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>()?
            };
            tx.execute(
                "UPDATE images SET status='FAILURE', status_message=?5, updated=?6
                 WHERE status IN (?1,?2,?3,?4) AND owner=?7",
                params![IN_FLIGHT[0], IN_FLIGHT[1], IN_FLIGHT[2], IN_FLIGHT[3], message, crate::state::now(), replica],
            )?;
            tx.commit()?;
            Ok(keys)
        })
        .await
    }

    async fn put_login(&self, login: &RegistryLogin) -> Result<(), StoreError> {
        let l = login.clone();
        self.with(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO registry_logins (system, uid, registry, username, password)
                 VALUES (?1,?2,?3,?4,?5)",
                params![l.system, l.uid, l.registry, l.username, l.password],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_login(
        &self,
        system: &str,
        uid: u32,
        registry: &str,
    ) -> Result<Option<RegistryLogin>, StoreError> {
        let (system, registry) = (system.to_owned(), registry.to_owned());
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT username, password FROM registry_logins
                 WHERE system=?1 AND uid=?2 AND registry=?3",
                params![system, uid, registry],
                |r| {
                    Ok(RegistryLogin {
                        system: system.clone(),
                        uid,
                        registry: registry.clone(),
                        username: r.get(0)?,
                        password: r.get(1)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn sqlite_store_keeps_the_store_contract() {
        let store = SqliteStore::in_memory().unwrap();
        crate::store::contract::check(&store).await;
    }

    #[tokio::test]
    async fn a_database_from_before_the_owner_column_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE images (system TEXT NOT NULL, itype TEXT NOT NULL, tag TEXT NOT NULL,
                 id TEXT NOT NULL, status TEXT NOT NULL, status_message TEXT NOT NULL,
                 acl TEXT NOT NULL, meta TEXT, last_pull INTEGER NOT NULL, updated INTEGER NOT NULL,
                 PRIMARY KEY (system, itype, tag));
                 INSERT INTO images VALUES ('s','docker','t','','READY','','{\"uids\":[],\"gids\":[]}',NULL,0,0);",
            )
            .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        let key = ImageKey {
            system: "s".into(),
            itype: "docker".into(),
            tag: "t".into(),
        };
        let row = s.get(&key).await.unwrap().unwrap();
        assert_eq!(row.replica, "");
        assert_eq!(
            row.owner_uid, None,
            "a public legacy row belongs to the admins"
        );
        s.put(&row).await.unwrap();
    }

    #[tokio::test]
    async fn a_database_from_before_owners_gets_owners_inferred_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE images (system TEXT NOT NULL, itype TEXT NOT NULL, tag TEXT NOT NULL,
                 id TEXT NOT NULL, status TEXT NOT NULL, status_message TEXT NOT NULL,
                 acl TEXT NOT NULL, meta TEXT, last_pull INTEGER NOT NULL, updated INTEGER NOT NULL,
                 owner TEXT NOT NULL DEFAULT '', PRIMARY KEY (system, itype, tag));
                 INSERT INTO images VALUES ('s','docker','public','','READY','','{\"uids\":[],\"gids\":[]}',NULL,0,0,'h');
                 INSERT INTO images VALUES ('s','docker','mine','','READY','','{\"uids\":[1001],\"gids\":[]}',NULL,0,0,'h');
                 INSERT INTO images VALUES ('s','docker','shared','','READY','','{\"uids\":[1001,1002],\"gids\":[]}',NULL,0,0,'h');
                 INSERT INTO images VALUES ('s','custom','grp','','READY','','{\"uids\":[1001],\"gids\":[50]}',NULL,0,0,'h');",
            )
            .unwrap();
        }
        async fn owner(s: &SqliteStore, itype: &str, tag: &str) -> Option<u32> {
            let key = ImageKey {
                system: "s".into(),
                itype: itype.into(),
                tag: tag.into(),
            };
            s.get(&key).await.unwrap().unwrap().owner_uid
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(owner(&s, "docker", "public").await, None);
        assert_eq!(owner(&s, "docker", "mine").await, Some(1001));
        assert_eq!(owner(&s, "docker", "shared").await, None);
        assert_eq!(owner(&s, "custom", "grp").await, None);
        // An admin later narrows the public row to one uid: reopening must not
        // hand the row to that uid.
        let key = ImageKey {
            system: "s".into(),
            itype: "docker".into(),
            tag: "public".into(),
        };
        let mut row = s.get(&key).await.unwrap().unwrap();
        row.acl.uids = vec![1002];
        s.put(&row).await.unwrap();
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(owner(&s, "docker", "public").await, None);
    }

    #[tokio::test]
    async fn sqlite_records_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/gw.sqlite");
        let key = ImageKey {
            system: "s".into(),
            itype: "docker".into(),
            tag: "t".into(),
        };
        {
            let s = SqliteStore::open(&path).unwrap();
            s.put(&StoredImage::new_job(key.clone(), Default::default(), 1))
                .await
                .unwrap();
        }
        let s = SqliteStore::open(&path).unwrap();
        assert!(s.get(&key).await.unwrap().is_some());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the store holds passwords");
    }
}
