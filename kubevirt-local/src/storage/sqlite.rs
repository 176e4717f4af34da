use super::durable::GroupSync;
use super::owners;
use super::{Event, EventType, ObjectKey, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// How many events the history keeps by default for resuming watches (older ones get 410 Expired).
pub const DEFAULT_HISTORY: u64 = 100_000;

/// How many bytes of object text the history keeps by default, whatever its length in events: a
/// large object updated often must not grow the database without bound (etcd compacts too).
pub const DEFAULT_HISTORY_BYTES: u64 = 16 << 20;

/// The largest stored object, as etcd's default request limit (`--max-request-bytes`, 1.5 MiB).
pub const MAX_OBJECT_BYTES: usize = 1_572_864;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, value TEXT NOT NULL, uid TEXT,
    PRIMARY KEY (resource, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY, resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    type TEXT NOT NULL, value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_resource ON events (resource, rv);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('rv', 0), ('compacted', 0);
";

/// The SQLite-backed store. Cheap to share behind an `Arc`; all methods block (call them from
/// `spawn_blocking` in async code).
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    /// Makes commits durable (one flush for those that arrive together) and publishes them.
    pub(super) sync: GroupSync,
    /// Committed changes, shared by every subscriber (one copy of each object, not one each).
    events: broadcast::Sender<Arc<Event>>,
    history: u64,
    history_bytes: u64,
    /// Bytes of history written since the last byte-budget compaction (under `conn`'s lock).
    unpruned: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Open (or create) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // Commits reach the OS; `GroupSync` flushes the log for them before they are shown.
        Self::configure(&conn, "NORMAL")?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let io = |e: std::io::Error| StoreError::Flush(e.to_string());
        let wal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&wal)
            .map_err(io)?;
        // The database and its log exist for good before any write is acknowledged.
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Self::init(conn, Some(wal))
    }

    /// Keep `events` changes of history (at least 1) instead of [`DEFAULT_HISTORY`].
    pub fn with_history(mut self, events: u64) -> Self {
        self.history = events.max(1);
        self
    }

    /// Keep at most about `bytes` of object text in the history instead of
    /// [`DEFAULT_HISTORY_BYTES`] (older changes get 410 Expired).
    pub fn with_history_bytes(mut self, bytes: u64) -> Self {
        self.history_bytes = bytes.max(1);
        self
    }

    /// A store in memory (tests and `--ephemeral`).
    pub fn in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()?;
        Self::configure(&conn, "FULL")?;
        Self::init(conn, None)
    }

    fn configure(conn: &Connection, synchronous: &str) -> Result<(), StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        // A checkpointed WAL shrinks back instead of keeping its largest size.
        conn.pragma_update(None, "journal_size_limit", 8 << 20)?;
        Ok(())
    }

    fn init(conn: Connection, wal: Option<std::fs::File>) -> Result<Self, StoreError> {
        conn.execute_batch(SCHEMA)?;
        owners::migrate(&conn)?;
        let (events, _) = broadcast::channel(16_384);
        let sync = GroupSync::new(wal);
        // The schema's own commits (a new database) are flushed before the store is used.
        let schema = sync.committed(Vec::new());
        sync.wait(schema, &events)?;
        Ok(Self {
            conn: Mutex::new(conn),
            sync,
            events,
            history: DEFAULT_HISTORY,
            history_bytes: DEFAULT_HISTORY_BYTES,
            unpruned: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (the transaction rolls
        // back), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> Result<u64, StoreError> {
        self.read(|conn| meta(conn, "rv"))
    }

    /// Runs `f` on the connection, then waits until whatever it could have seen is durable.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (out, seen) = {
            let conn = self.lock();
            (f(&conn)?, self.sync.newest())
        };
        self.sync.wait(seen, &self.events)?;
        Ok(out)
    }

    /// Subscribe to changes committed from now on. Every subscriber receives the same `Arc`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// One object.
    pub fn get(&self, key: &ObjectKey) -> Result<Option<Value>, StoreError> {
        self.read(|conn| get(conn, key))
    }

    /// Every object of `resource` (in `namespace` if given), ordered by namespace and name, and the
    /// resourceVersion the list is consistent with.
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<(Vec<Value>, u64), StoreError> {
        self.read(|conn| {
            let rv = meta(conn, "rv")?;
            let items = list(conn, resource, namespace)?
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            Ok((items, rv))
        })
    }

    /// Changes of `resource` after `since`, oldest first; `Expired` if the history no longer
    /// reaches back that far.
    pub fn events_since(&self, resource: &str, since: u64) -> Result<Vec<Event>, StoreError> {
        self.read(|conn| events_since(conn, resource, since))
    }

    /// Run `f` in one durable transaction: `write` returns, and the changes' events reach
    /// watchers, once the commit is on the disk (group commit: `storage/durable.rs`).
    pub fn write<T, E>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let (out, seq) = {
            let mut conn = self.lock();
            let tx = conn.transaction().map_err(StoreError::from)?;
            let rv = meta(&tx, "rv")?;
            let meta_rv_before = rv;
            let mut txn = Txn {
                tx,
                rv,
                events: Vec::new(),
                bytes: 0,
            };
            let out = f(&mut txn)?;
            let Txn {
                tx,
                rv,
                events,
                bytes,
            } = txn;
            if rv == meta_rv_before {
                // Nothing written: a read-only transaction ends without touching the disk, once
                // what it read is durable.
                tx.commit().map_err(StoreError::from)?;
                (out, self.sync.newest())
            } else {
                tx.execute("UPDATE meta SET v = ?1 WHERE k = 'rv'", params![rv as i64])
                    .map_err(StoreError::from)?;
                self.compact_count(&tx, meta_rv_before, rv)?;
                self.compact_bytes(&tx, bytes)?;
                tx.commit().map_err(StoreError::from)?;
                // Numbered under the lock, so that watchers see changes in resourceVersion order.
                (out, self.sync.committed(events))
            }
        };
        self.sync.wait(seq, &self.events)?;
        Ok(out)
    }
}

impl Store {
    /// Every `history` changes (at most 1024), drop the history older than the last `history`
    /// changes; `before` and `rv` are the resourceVersions before and after this transaction.
    fn compact_count(
        &self,
        tx: &rusqlite::Transaction<'_>,
        before: u64,
        rv: u64,
    ) -> Result<(), StoreError> {
        let every = self.history.clamp(1, 1024);
        if rv / every != before / every && rv > self.history {
            let floor = rv - self.history;
            tx.execute("DELETE FROM events WHERE rv <= ?1", params![floor as i64])?;
            tx.execute(
                "UPDATE meta SET v = ?1 WHERE k = 'compacted'",
                params![floor as i64],
            )?;
        }
        Ok(())
    }

    /// Once a quarter of the byte budget has been written since the last time, drop the oldest
    /// history beyond the budget (counted from the newest change backwards).
    fn compact_bytes(
        &self,
        tx: &rusqlite::Transaction<'_>,
        written: u64,
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let pending = self.unpruned.fetch_add(written, Ordering::Relaxed) + written;
        if pending < self.history_bytes / 4 {
            return Ok(());
        }
        self.unpruned.store(0, Ordering::Relaxed);
        let floor: i64 = tx.query_row(
            "SELECT COALESCE(MAX(rv), 0) FROM (SELECT rv, SUM(length(value)) OVER (ORDER BY rv DESC ROWS UNBOUNDED PRECEDING) AS tail FROM events) WHERE tail > ?1",
            params![self.history_bytes as i64],
            |r| r.get(0),
        )?;
        if floor > 0 {
            tx.execute("DELETE FROM events WHERE rv <= ?1", params![floor])?;
            tx.execute(
                "UPDATE meta SET v = MAX(v, ?1) WHERE k = 'compacted'",
                params![floor],
            )?;
        }
        Ok(())
    }
}

/// An open write transaction.
pub struct Txn<'c> {
    tx: rusqlite::Transaction<'c>,
    rv: u64,
    events: Vec<Event>,
    /// Bytes of history this transaction wrote.
    bytes: u64,
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn")
            .field("rv", &self.rv)
            .finish_non_exhaustive()
    }
}

impl Txn<'_> {
    /// Read an object inside the transaction.
    pub fn get(&self, key: &ObjectKey) -> Result<Option<Value>, StoreError> {
        get(&self.tx, key)
    }

    /// Every object of `resource` in `namespace` (all namespaces if `None`).
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<(ObjectKey, Value)>, StoreError> {
        list(&self.tx, resource, namespace)
    }

    /// The object with metadata.uid `uid`, if it exists (indexed).
    pub fn key_of_uid(&self, uid: &str) -> Result<Option<ObjectKey>, StoreError> {
        owners::key_of_uid(&self.tx, uid)
    }

    /// The objects whose ownerReferences name `uid` (indexed).
    pub fn dependents(&self, uid: &str) -> Result<Vec<ObjectKey>, StoreError> {
        owners::dependents(&self.tx, uid)
    }

    /// Every object in `namespace`, of any resource (indexed).
    pub fn keys_in_namespace(&self, namespace: &str) -> Result<Vec<ObjectKey>, StoreError> {
        owners::keys_in_namespace(&self.tx, namespace)
    }

    /// Every object the garbage collector may have to act on: those being deleted and those with
    /// an owner that is gone. A scan of the objects' text, for start-up and for a collector that
    /// fell behind.
    pub fn gc_candidates(&self) -> Result<Vec<ObjectKey>, StoreError> {
        owners::candidates(&self.tx)
    }

    /// Create or replace an object: it gets the next resourceVersion, stamped into
    /// `metadata.resourceVersion`. Returns the stored object.
    pub fn put(
        &mut self,
        key: &ObjectKey,
        mut object: Value,
        kind: EventType,
    ) -> Result<Value, StoreError> {
        object["metadata"]["resourceVersion"] = Value::String((self.rv + 1).to_string());
        let text = object.to_string();
        if text.len() > MAX_OBJECT_BYTES {
            return Err(StoreError::TooLarge {
                size: text.len(),
                limit: MAX_OBJECT_BYTES,
            });
        }
        self.rv += 1;
        let uid = object["metadata"]["uid"].as_str();
        self.tx.execute(
            "INSERT INTO objects (resource, namespace, name, rv, value, uid) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (resource, namespace, name) DO UPDATE SET rv = excluded.rv, value = excluded.value, uid = excluded.uid",
            params![key.resource, key.namespace, key.name, self.rv as i64, text, uid],
        )?;
        owners::index(&self.tx, key, &object)?;
        self.record(key, kind, &object, &text)?;
        Ok(object)
    }

    /// Remove an object; its last state goes to watchers with the deletion's resourceVersion.
    pub fn remove(&mut self, key: &ObjectKey, mut last: Value) -> Result<Value, StoreError> {
        self.rv += 1;
        last["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.tx.execute(
            "DELETE FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
            params![key.resource, key.namespace, key.name],
        )?;
        owners::unindex(&self.tx, key)?;
        let text = last.to_string();
        self.record(key, EventType::Deleted, &last, &text)?;
        Ok(last)
    }

    fn record(
        &mut self,
        key: &ObjectKey,
        kind: EventType,
        object: &Value,
        text: &str,
    ) -> Result<(), StoreError> {
        self.bytes += text.len() as u64;
        self.tx.execute(
            "INSERT INTO events (rv, resource, namespace, name, type, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![self.rv as i64, key.resource, key.namespace, key.name, kind.as_str(), text],
        )?;
        self.events.push(Event {
            rv: self.rv,
            kind,
            key: key.clone(),
            object: object.clone(),
        });
        Ok(())
    }
}

/// Changes of `resource` after `since` (see [`Store::events_since`]).
fn events_since(conn: &Connection, resource: &str, since: u64) -> Result<Vec<Event>, StoreError> {
    let compacted = meta(conn, "compacted")?;
    if since < compacted {
        return Err(StoreError::Expired {
            requested: since,
            oldest: compacted,
        });
    }
    let mut stmt = conn.prepare_cached(
        "SELECT rv, namespace, name, type, value FROM events WHERE resource = ?1 AND rv > ?2 ORDER BY rv",
    )?;
    let mut rows = stmt.query(params![resource, since as i64])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let rv: i64 = row.get(0)?;
        let name: String = row.get(2)?;
        let text: String = row.get(4)?;
        let kind: String = row.get(3)?;
        out.push(Event {
            rv: rv as u64,
            kind: EventType::parse(&kind).unwrap_or(EventType::Modified),
            key: ObjectKey::new(resource, row.get::<_, String>(1)?, name.clone()),
            object: serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(name, e))?,
        });
    }
    Ok(out)
}

/// Every object of `resource` (in `namespace` if given), ordered by namespace and name.
fn list(
    conn: &Connection,
    resource: &str,
    namespace: Option<&str>,
) -> Result<Vec<(ObjectKey, Value)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT namespace, name, value FROM objects WHERE resource = ?1 AND (?2 IS NULL OR namespace = ?2) ORDER BY namespace, name",
    )?;
    let mut rows = stmt.query(params![resource, namespace])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let ns: String = row.get(0)?;
        let name: String = row.get(1)?;
        let text: String = row.get(2)?;
        let key = ObjectKey::new(resource, ns, name);
        let v = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(key.to_string(), e))?;
        out.push((key, v));
    }
    Ok(out)
}

fn meta(conn: &Connection, k: &str) -> Result<u64, StoreError> {
    let v: i64 = conn.query_row("SELECT v FROM meta WHERE k = ?1", params![k], |r| r.get(0))?;
    Ok(v as u64)
}

fn get(conn: &Connection, key: &ObjectKey) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached(
            "SELECT value FROM objects WHERE resource = ?1 AND namespace = ?2 AND name = ?3",
        )?
        .query_row(params![key.resource, key.namespace, key.name], |r| r.get(0))
        .optional()?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(key.to_string(), e)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: &str) -> ObjectKey {
        ObjectKey::new("kubevirt.io/virtualmachines", "default", n)
    }

    #[test]
    fn writes_bump_the_global_rv_and_record_history() {
        let store = Store::in_memory().unwrap();
        let mut rx = store.subscribe();
        let a = store
            .write(|t| {
                t.put(
                    &key("a"),
                    json!({"metadata": {"name": "a"}}),
                    EventType::Added,
                )
            })
            .unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        store
            .write(|t| {
                t.put(
                    &key("b"),
                    json!({"metadata": {"name": "b"}}),
                    EventType::Added,
                )
            })
            .unwrap();
        store.write(|t| t.remove(&key("a"), a.clone())).unwrap();
        assert_eq!(store.current_rv().unwrap(), 3);
        let (items, rv) = store
            .list("kubevirt.io/virtualmachines", Some("default"))
            .unwrap();
        assert_eq!((items.len(), rv), (1, 3));
        let hist = store
            .events_since("kubevirt.io/virtualmachines", 1)
            .unwrap();
        let kinds: Vec<_> = hist.iter().map(|e| (e.rv, e.kind)).collect();
        assert_eq!(kinds, [(2, EventType::Added), (3, EventType::Deleted)]);
        assert_eq!(rx.try_recv().unwrap().rv, 1);
    }

    #[test]
    fn a_failed_transaction_changes_nothing() {
        let store = Store::in_memory().unwrap();
        let r: Result<(), StoreError> = store.write(|t| {
            t.put(&key("a"), json!({"metadata": {}}), EventType::Added)?;
            Err(StoreError::Expired {
                requested: 0,
                oldest: 0,
            })
        });
        assert!(r.is_err());
        assert_eq!(store.current_rv().unwrap(), 0);
        assert!(store.get(&key("a")).unwrap().is_none());
    }

    #[test]
    fn history_is_compacted_and_old_versions_expire() {
        let store = Store::in_memory().unwrap().with_history(10);
        for i in 0..50 {
            store
                .write(|t| {
                    t.put(
                        &key(&format!("o{i}")),
                        json!({"metadata": {}}),
                        EventType::Added,
                    )
                })
                .unwrap();
        }
        assert!(matches!(
            store.events_since("kubevirt.io/virtualmachines", 5),
            Err(StoreError::Expired { .. })
        ));
        assert_eq!(
            store
                .events_since("kubevirt.io/virtualmachines", 45)
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn survives_reopen() {
        let dir = std::env::temp_dir().join(format!("kv-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .write(|t| {
                    t.put(
                        &key("a"),
                        json!({"metadata": {"name": "a"}}),
                        EventType::Added,
                    )
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.current_rv().unwrap(), 1);
        assert_eq!(
            store.get(&key("a")).unwrap().unwrap()["metadata"]["resourceVersion"],
            "1"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
