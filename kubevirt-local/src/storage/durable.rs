//! Group commit: many transactions made durable by one flush, as etcd batches its writes.
//!
//! The store commits in WAL mode with `synchronous=NORMAL`: a commit writes its frames to the
//! write-ahead log (the OS has them, so they survive a `kill -9`) but does not flush it. Then the
//! writer waits here for the commit to be durable. The first writer to find no flush running
//! becomes the leader: it takes the newest commit's number, `fdatasync`s the log (every frame
//! written before the flush began is on the disk after it), publishes those commits' events in
//! commit order and wakes the others. Commits made while a flush runs wait for the next one, so
//! under load one flush covers many writes, and the store's connection is never held during a
//! flush: reads and other writes go on meanwhile.
//!
//! Nothing is shown before it is durable: a write returns, and its events reach watchers, only
//! after the flush that covers it; a read notes the newest commit it could have seen and waits
//! for that commit's flush too. So a client never sees a change that a power loss could take
//! back, exactly as with a flush per commit (`synchronous=FULL`).

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::broadcast;

use super::{Event, StoreError};

/// Flushes the write-ahead log for groups of commits and publishes their events.
#[derive(Debug)]
pub(super) struct GroupSync {
    /// The write-ahead log (`None`: a store in memory, nothing to flush).
    wal: Option<File>,
    state: Mutex<State>,
    flushed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The newest commit's number.
    committed: u64,
    /// Every commit up to this number is durable and published.
    durable: u64,
    /// A leader is flushing.
    flushing: bool,
    /// Committed changes not yet durable, oldest first.
    pending: VecDeque<(u64, Vec<Event>)>,
    /// A flush failed: what the OS said. Nothing after it can be promised durable.
    failed: Option<String>,
    /// Flushes done (for tests and diagnostics).
    flushes: u64,
}

impl GroupSync {
    /// Group commit for the log `wal` (`None` for a store in memory).
    pub(super) fn new(wal: Option<File>) -> Self {
        Self {
            wal,
            state: Mutex::new(State::default()),
            flushed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain counters and a queue updated in single steps: still whole after a
        // panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a commit with its `events`; returns its number. Called under the store's
    /// connection lock right after the commit, so numbers follow commit order.
    pub(super) fn committed(&self, events: Vec<Event>) -> u64 {
        let mut st = self.lock();
        st.committed += 1;
        let seq = st.committed;
        st.pending.push_back((seq, events));
        seq
    }

    /// The newest commit's number. Called under the store's connection lock by a read: what
    /// it read is no newer than this.
    pub(super) fn newest(&self) -> u64 {
        self.lock().committed
    }

    /// How many flushes have run.
    #[cfg(test)]
    pub(super) fn flushes(&self) -> u64 {
        self.lock().flushes
    }

    /// Blocks until commit `seq` is durable, flushing the log if no one else is; the flush's
    /// leader publishes the commits' events to `events` in order.
    pub(super) fn wait(
        &self,
        seq: u64,
        events: &broadcast::Sender<Arc<Event>>,
    ) -> Result<(), StoreError> {
        let mut st = self.lock();
        loop {
            if let Some(e) = &st.failed {
                return Err(StoreError::Flush(e.clone()));
            }
            if st.durable >= seq {
                return Ok(());
            }
            if st.flushing {
                st = self.flushed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.flushing = true;
            let target = st.committed;
            drop(st);
            let flushed = self.wal.as_ref().map_or(Ok(()), File::sync_data);
            st = self.lock();
            st.flushing = false;
            st.flushes += 1;
            match flushed {
                Ok(()) => {
                    while st.pending.front().is_some_and(|(s, _)| *s <= target) {
                        if let Some((_, list)) = st.pending.pop_front() {
                            for e in list {
                                // No receivers is fine: nobody is watching.
                                let _ = events.send(Arc::new(e));
                            }
                        }
                    }
                    st.durable = target;
                }
                Err(e) => {
                    tracing::error!(error = %e, "flushing the store's write-ahead log failed: no write is acknowledged from now on");
                    st.failed = Some(e.to_string());
                }
            }
            self.flushed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{EventType, ObjectKey, Store};
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn concurrent_writers_share_flushes_and_watchers_see_every_change_in_order() {
        let dir = std::env::temp_dir().join(format!("kv-group-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Arc::new(Store::open(&dir.join("state.db")).unwrap());
        let mut rx = store.subscribe();
        let before = store.sync.flushes();
        let (threads, each) = (8, 50);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for i in 0..each {
                        let key = ObjectKey::new("configmaps", "default", format!("cm-{t}-{i}"));
                        let stored = store
                            .write(|tx| tx.put(&key, json!({"metadata": {}}), EventType::Added))
                            .unwrap();
                        // Acknowledged means durable and readable.
                        assert_eq!(store.get(&key).unwrap(), Some(stored));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let writes = threads * each;
        let rvs: Vec<u64> = (0..writes).map(|_| rx.try_recv().unwrap().rv).collect();
        assert_eq!(rvs, (1..=writes as u64).collect::<Vec<_>>());
        assert!(rx.try_recv().is_err(), "one event a write");
        let flushes = store.sync.flushes() - before;
        // Reads flush nothing they did not see; writes that arrived together shared a flush.
        assert!(
            flushes < writes as u64,
            "{flushes} flushes for {writes} concurrent writes"
        );
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_flush_acknowledges_nothing_from_then_on() {
        // fdatasync of /dev/null fails (EINVAL), as a failing disk would.
        let sync = GroupSync::new(Some(File::open("/dev/null").unwrap()));
        let (events, mut rx) = broadcast::channel(4);
        let event = Event {
            rv: 1,
            kind: EventType::Added,
            key: ObjectKey::new("configmaps", "default", "a"),
            object: json!({}),
        };
        let seq = sync.committed(vec![event]);
        let e = sync.wait(seq, &events).unwrap_err();
        assert!(e.to_string().contains("could not be flushed"), "{e}");
        assert!(rx.try_recv().is_err(), "nothing published");
        let later = sync.committed(Vec::new());
        assert!(matches!(
            sync.wait(later, &events),
            Err(StoreError::Flush(_))
        ));
    }

    #[test]
    fn in_memory_commits_are_published_at_once_in_order() {
        let sync = GroupSync::new(None);
        let (events, mut rx) = broadcast::channel(4);
        let ev = |rv| Event {
            rv,
            kind: EventType::Added,
            key: ObjectKey::new("configmaps", "default", "a"),
            object: json!({}),
        };
        let first = sync.committed(vec![ev(1)]);
        let second = sync.committed(vec![ev(2), ev(3)]);
        // Waiting for the second publishes the first too, oldest first.
        sync.wait(second, &events).unwrap();
        sync.wait(first, &events).unwrap();
        let got: Vec<u64> = (0..3).map(|_| rx.try_recv().unwrap().rv).collect();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(sync.flushes(), 1);
    }
}
