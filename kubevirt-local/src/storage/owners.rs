//! The indexes garbage collection reads, kept in the same transaction as the objects: each
//! object's `metadata.uid` (a column of `objects`), its owners (`owner_refs`: owner uid →
//! dependent), and the objects of a namespace. With them, collecting after a write looks at the
//! written object and its neighbours only, whatever the size of the store.

use super::{ObjectKey, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// Bumped when the indexes change shape; a database below it is re-indexed when opened.
const INDEX_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS owner_refs (
    owner TEXT NOT NULL, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    PRIMARY KEY (owner, resource, namespace, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS owner_refs_by_dependent ON owner_refs (resource, namespace, name);
CREATE INDEX IF NOT EXISTS objects_by_uid ON objects (uid);
CREATE INDEX IF NOT EXISTS objects_by_namespace ON objects (namespace);
";

/// Create the indexes, and fill them when the database was written by a version without them.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: Option<i64> = conn
        .query_row("SELECT v FROM meta WHERE k = 'index_version'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if version.is_some_and(|v| v >= INDEX_VERSION) {
        return Ok(());
    }
    let tx = conn.unchecked_transaction()?;
    let has_uid: bool = tx
        .prepare("SELECT 1 FROM pragma_table_info('objects') WHERE name = 'uid'")?
        .exists([])?;
    if !has_uid {
        tx.execute_batch("ALTER TABLE objects ADD COLUMN uid TEXT")?;
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch("DELETE FROM owner_refs")?;
    {
        let mut rows = tx.prepare("SELECT resource, namespace, name, value FROM objects")?;
        let mut rows = rows.query([])?;
        let mut set_uid = tx.prepare(
            "UPDATE objects SET uid = ?4 WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        )?;
        while let Some(row) = rows.next()? {
            let key = ObjectKey::new(
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            );
            let text: String = row.get(3)?;
            let object: Value =
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(key.to_string(), e))?;
            set_uid.execute(params![
                key.resource,
                key.namespace,
                key.name,
                object["metadata"]["uid"].as_str()
            ])?;
            index(&tx, &key, &object)?;
        }
    }
    tx.execute(
        "INSERT INTO meta (k, v) VALUES ('index_version', ?1) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
        params![INDEX_VERSION],
    )?;
    tx.commit()?;
    Ok(())
}

fn owner_uids(object: &Value) -> impl Iterator<Item = &str> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

/// Record `object`'s owners (replacing what `key` had).
pub(super) fn index(conn: &Connection, key: &ObjectKey, object: &Value) -> Result<(), StoreError> {
    unindex(conn, key)?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO owner_refs (owner, resource, namespace, name) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for owner in owner_uids(object) {
        insert.execute(params![owner, key.resource, key.namespace, key.name])?;
    }
    Ok(())
}

/// Forget `key`'s owners.
pub(super) fn unindex(conn: &Connection, key: &ObjectKey) -> Result<(), StoreError> {
    conn.prepare_cached(
        "DELETE FROM owner_refs WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
    )?
    .execute(params![key.resource, key.namespace, key.name])?;
    Ok(())
}

fn keys(
    conn: &Connection,
    sql: &str,
    param: impl rusqlite::Params,
) -> Result<Vec<ObjectKey>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(param, |r| {
        Ok(ObjectKey::new(
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn key_of_uid(conn: &Connection, uid: &str) -> Result<Option<ObjectKey>, StoreError> {
    Ok(keys(
        conn,
        "SELECT resource, namespace, name FROM objects WHERE uid = ?1 LIMIT 1",
        params![uid],
    )?
    .pop())
}

pub(super) fn dependents(conn: &Connection, uid: &str) -> Result<Vec<ObjectKey>, StoreError> {
    keys(
        conn,
        "SELECT resource, namespace, name FROM owner_refs WHERE owner = ?1",
        params![uid],
    )
}

pub(super) fn keys_in_namespace(
    conn: &Connection,
    namespace: &str,
) -> Result<Vec<ObjectKey>, StoreError> {
    keys(
        conn,
        "SELECT resource, namespace, name FROM objects WHERE namespace = ?1",
        params![namespace],
    )
}

pub(super) fn candidates(conn: &Connection) -> Result<Vec<ObjectKey>, StoreError> {
    keys(
        conn,
        "SELECT resource, namespace, name FROM objects WHERE instr(value, '\"deletionTimestamp\"') > 0
         UNION SELECT r.resource, r.namespace, r.name FROM owner_refs r
           WHERE NOT EXISTS (SELECT 1 FROM objects o WHERE o.uid = r.owner)",
        [],
    )
}

#[cfg(test)]
mod tests {
    use crate::storage::{EventType, ObjectKey, Store};
    use serde_json::json;

    fn key(n: &str) -> ObjectKey {
        ObjectKey::new("/configmaps", "default", n)
    }

    #[test]
    fn the_indexes_follow_puts_and_removes() {
        let store = Store::in_memory().unwrap();
        store
            .write(|t| {
                t.put(
                    &key("owner"),
                    json!({"metadata": {"uid": "u1"}}),
                    EventType::Added,
                )?;
                t.put(
                    &key("dep"),
                    json!({"metadata": {"uid": "u2", "ownerReferences": [{"uid": "u1"}]}}),
                    EventType::Added,
                )?;
                assert_eq!(t.key_of_uid("u1")?, Some(key("owner")));
                assert_eq!(t.dependents("u1")?, [key("dep")]);
                assert_eq!(t.keys_in_namespace("default")?.len(), 2);
                assert!(t.gc_candidates()?.is_empty());
                // Releasing the dependent drops it from the owner's list.
                t.put(
                    &key("dep"),
                    json!({"metadata": {"uid": "u2"}}),
                    EventType::Modified,
                )?;
                assert!(t.dependents("u1")?.is_empty());
                let last = t.get(&key("owner"))?.unwrap();
                t.remove(&key("owner"), last)?;
                assert_eq!(t.key_of_uid("u1")?, None);
                // A dependent whose owner went is a candidate.
                t.put(
                    &key("late"),
                    json!({"metadata": {"uid": "u3", "ownerReferences": [{"uid": "u1"}]}}),
                    EventType::Added,
                )?;
                assert_eq!(t.gc_candidates()?, [key("late")]);
                Ok::<_, crate::storage::StoreError>(())
            })
            .unwrap();
    }

    #[test]
    fn a_database_without_indexes_is_indexed_when_opened() {
        let dir = std::env::temp_dir().join(format!("kv-owners-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        {
            // The schema before the indexes existed.
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE objects (resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
                 rv INTEGER NOT NULL, value TEXT NOT NULL, PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
                 CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
                 INSERT INTO meta VALUES ('rv', 1), ('compacted', 0);
                 INSERT INTO objects VALUES ('/configmaps', 'default', 'dep', 1,
                   '{\"metadata\":{\"uid\":\"u2\",\"ownerReferences\":[{\"uid\":\"u1\"}]}}');",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        store
            .write(|t| {
                assert_eq!(t.dependents("u1")?, [key("dep")]);
                assert_eq!(t.key_of_uid("u2")?, Some(key("dep")));
                Ok::<_, crate::storage::StoreError>(())
            })
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
