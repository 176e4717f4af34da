//! Durable object storage: every object, the global resourceVersion counter and the change history
//! that watches resume from, in embedded SQLite.
//!
//! Writes happen in [`Store::write`] transactions: each `put`/`remove` takes the next global
//! resourceVersion, stamps it into the object and records a watch event; the commit is durable
//! before `write` returns, and only then are the events published to live watchers. A write is
//! therefore acknowledged only once it would survive `kill -9` or power loss. Commits that arrive
//! together share one flush of the write-ahead log (group commit, `durable.rs`), and reads wait for
//! the flush of anything they could have seen.

mod durable;
mod key;
mod owners;
mod sqlite;

pub use self::key::ObjectKey;
pub use self::sqlite::{DEFAULT_HISTORY, DEFAULT_HISTORY_BYTES, MAX_OBJECT_BYTES, Store, Txn};

use serde_json::Value;
use thiserror::Error;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Removed.
    Deleted,
}

impl EventType {
    /// The watch event type as the API sends it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ADDED" => EventType::Added,
            "MODIFIED" => EventType::Modified,
            "DELETED" => EventType::Deleted,
            _ => return None,
        })
    }
}

/// One change, as stored in the history and sent to watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: ObjectKey,
    /// The object after the change (for `Deleted`, its last state with the deletion's RV).
    pub object: Value,
}

/// Storage failures.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored document is not valid JSON (the database was modified outside the server).
    #[error("storage: stored object {0} is corrupt: {1}")]
    Corrupt(String, serde_json::Error),
    /// The object is larger than storage takes.
    #[error(
        "etcdserver: request is too large: the object is {size} bytes, more than the {limit}-byte limit of a stored object"
    )]
    TooLarge {
        /// The encoded object's size.
        size: usize,
        /// [`MAX_OBJECT_BYTES`].
        limit: usize,
    },
    /// Flushing the write-ahead log to disk failed: the disk or file system is failing.
    #[error(
        "storage: the database's write-ahead log could not be flushed to disk ({0}); no write can be acknowledged until the server is restarted on a healthy disk"
    )]
    Flush(String),
    /// The history no longer reaches back to the requested resourceVersion.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// What the client asked for.
        requested: u64,
        /// The oldest resourceVersion still in the history.
        oldest: u64,
    },
}
