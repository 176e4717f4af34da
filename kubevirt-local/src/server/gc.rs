//! Deletion with finalizers and propagation policies, garbage collection of dependents
//! (ownerReferences), and namespace termination.

use super::state::{CRD_RESOURCE, NAMESPACE_RESOURCE, State, now};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::storage::{Event, EventType, ObjectKey, Store, StoreError, Txn};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// The namespace finalizer the server itself owns.
const NAMESPACE_FINALIZER: &str = "kubernetes";

fn finalizers(o: &Value) -> Vec<String> {
    o["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Delete `old` under `policy`: remove it now when nothing holds it, else mark it as being deleted
/// (deletionTimestamp, generation + 1) and let the finalizers' owners finish.
pub fn delete_in(
    tx: &mut Txn<'_>,
    res: &Resource,
    k: &ObjectKey,
    mut old: Value,
    policy: &str,
    now: &str,
) -> Result<Value, ApiError> {
    let mut fins = finalizers(&old);
    match policy {
        "Foreground" if !fins.iter().any(|f| f == FOREGROUND) => fins.push(FOREGROUND.into()),
        "Orphan" if !fins.iter().any(|f| f == ORPHAN) => fins.push(ORPHAN.into()),
        _ => {}
    }
    let is_namespace = k.resource == NAMESPACE_RESOURCE;
    if is_namespace {
        old["spec"]["finalizers"] = json!([NAMESPACE_FINALIZER]);
        old["status"] = json!({"phase": "Terminating"});
    }
    if fins.is_empty() && !is_namespace {
        if k.resource == CRD_RESOURCE {
            remove_all_of(tx, &old)?;
        }
        return Ok(tx.remove(k, old)?);
    }
    if old["metadata"].get("deletionTimestamp").is_none() {
        old["metadata"]["deletionTimestamp"] = json!(now);
        old["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        if !res.builtin || is_namespace {
            old["metadata"]["generation"] = json!(generation + 1);
        }
    }
    if !fins.is_empty() {
        old["metadata"]["finalizers"] = json!(fins);
    }
    Ok(tx.put(k, old, EventType::Modified)?)
}

/// Deleting a CRD deletes every object of its kind.
fn remove_all_of(tx: &mut Txn<'_>, crd: &Value) -> Result<(), ApiError> {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    for (k, v) in tx.list(&format!("{group}/{plural}"), None)? {
        tx.remove(&k, v)?;
    }
    Ok(())
}

/// The garbage collector's work list, fed by the store's change stream: every change names the
/// objects that may now need collecting (the changed object; for a removal, its dependents, its
/// owners and its namespace), and only those are looked at, through the store's indexes. A write
/// therefore costs the same whatever the size of the store.
#[derive(Debug)]
pub struct Collector {
    feed: Mutex<Feed>,
}

#[derive(Debug)]
struct Feed {
    changes: broadcast::Receiver<Arc<Event>>,
    /// Objects to look at.
    checks: BTreeSet<ObjectKey>,
    /// Removed objects whose neighbours are to be looked at: (uid, owner uids, namespace).
    gone: Vec<(Option<String>, Vec<String>, String)>,
    /// Look at every candidate in the store: at start, and when the feed fell behind.
    resync: bool,
}

/// How many rounds one [`collect`] runs before leaving the rest to the next write; each round
/// handles what the previous one changed (a foreground delete takes two per level of ownership).
const MAX_ROUNDS: usize = 64;

impl Collector {
    /// A collector fed by `store`'s changes from now on; it first looks at every candidate the
    /// store already holds.
    pub fn new(store: &Store) -> Self {
        Self {
            feed: Mutex::new(Feed {
                changes: store.subscribe(),
                checks: BTreeSet::new(),
                gone: Vec::new(),
                resync: true,
            }),
        }
    }
}

impl Feed {
    /// Take every change published so far into the work list.
    fn drain(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(e) if e.kind == EventType::Deleted => {
                    let uid = e.object["metadata"]["uid"].as_str().map(str::to_string);
                    self.gone
                        .push((uid, owners_of(&e.object), e.key.namespace.clone()));
                }
                Ok(e) => {
                    self.checks.insert(e.key.clone());
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync = true,
                Err(_) => return,
            }
        }
    }
}

fn owners_of(o: &Value) -> Vec<String> {
    o["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
        .map(str::to_string)
        .collect()
}

/// Collect what the changes since the last call call for, until nothing more changes:
/// background-cascade dependents of removed owners, foreground and orphan finalizers, and
/// terminating namespaces. Called after every write, before its reply.
pub fn collect(state: &State) {
    let mut feed = state.gc.feed.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..MAX_ROUNDS {
        feed.drain();
        if std::mem::take(&mut feed.resync) {
            match state.store.write(|tx| tx.gc_candidates()) {
                Ok(keys) => feed.checks.extend(keys),
                Err(e) => tracing::warn!(error = %e, "garbage collection"),
            }
        }
        for (uid, owners, namespace) in std::mem::take(&mut feed.gone) {
            let neighbours = state.store.write(|tx| -> Result<_, StoreError> {
                let mut keys = match &uid {
                    Some(uid) => tx.dependents(uid)?,
                    None => Vec::new(),
                };
                for owner in &owners {
                    keys.extend(tx.key_of_uid(owner)?);
                }
                if !namespace.is_empty() {
                    keys.push(ObjectKey::new(NAMESPACE_RESOURCE, "", namespace.as_str()));
                }
                Ok(keys)
            });
            match neighbours {
                Ok(keys) => feed.checks.extend(keys),
                Err(e) => tracing::warn!(error = %e, "garbage collection"),
            }
        }
        if feed.checks.is_empty() {
            return;
        }
        for k in std::mem::take(&mut feed.checks) {
            if let Err(e) = state.store.write(|tx| check(state, tx, &k)) {
                tracing::warn!(object = %k, error = %e, "garbage collection");
            }
        }
    }
}

fn is_deleting(o: &Value) -> bool {
    o["metadata"].get("deletionTimestamp").is_some()
}

/// Do what garbage collection owes the object at `k`, if anything.
fn check(state: &State, tx: &mut Txn<'_>, k: &ObjectKey) -> Result<(), ApiError> {
    let Some(o) = tx.get(k)? else {
        return Ok(());
    };
    let deleting = is_deleting(&o);
    let fins = finalizers(&o);
    let uid = o["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let now = now();
    // Orphan: strip ownerReferences to this owner, then drop the finalizer.
    if deleting && fins.iter().any(|f| f == ORPHAN) {
        for dk in tx.dependents(&uid)? {
            if let Some(mut d) = tx.get(&dk)? {
                if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"].as_str() != Some(uid.as_str()));
                }
                tx.put(&dk, d, EventType::Modified)?;
            }
        }
        return drop_finalizer(tx, k, &o, ORPHAN);
    }
    // Foreground: dependents first, then the owner.
    if deleting && fins.iter().any(|f| f == FOREGROUND) {
        let mut deps = Vec::new();
        for dk in tx.dependents(&uid)? {
            deps.extend(tx.get(&dk)?.map(|d| (dk, d)));
        }
        if deps.is_empty() {
            return drop_finalizer(tx, k, &o, FOREGROUND);
        }
        for (dk, dep) in deps {
            if !is_deleting(&dep) {
                delete_dependent(state, tx, &dk, dep, "Foreground", &now)?;
            }
        }
        return Ok(());
    }
    // A terminating namespace: its contents go, then it goes once it is empty.
    if deleting && k.resource == NAMESPACE_RESOURCE {
        let contents = tx.keys_in_namespace(&k.name)?;
        if contents.is_empty() {
            let mut o = o;
            o["spec"]["finalizers"] = json!([]);
            if finalizers(&o).is_empty() {
                tx.remove(k, o)?;
            }
        }
        for ck in contents {
            if let Some(c) = tx.get(&ck)?
                && !is_deleting(&c)
            {
                delete_dependent(state, tx, &ck, c, "Background", &now)?;
            }
        }
        return Ok(());
    }
    if deleting {
        return Ok(());
    }
    // Background: dependents whose owners are all gone; a dependent of an owner in a
    // foreground delete goes first, as the owner's own check would have it.
    let owners = owners_of(&o);
    if !owners.is_empty() {
        let mut present = Vec::new();
        for u in &owners {
            if let Some(ok) = tx.key_of_uid(u)? {
                present.extend(tx.get(&ok)?);
            }
        }
        if present.is_empty() {
            return delete_dependent(state, tx, k, o, "Background", &now);
        }
        if present
            .iter()
            .any(|p| is_deleting(p) && finalizers(p).iter().any(|f| f == FOREGROUND))
        {
            return delete_dependent(state, tx, k, o, "Foreground", &now);
        }
    }
    // Contents of terminating namespaces.
    if !k.namespace.is_empty()
        && tx
            .get(&ObjectKey::new(
                NAMESPACE_RESOURCE,
                "",
                k.namespace.as_str(),
            ))?
            .is_some_and(|ns| is_deleting(&ns))
    {
        return delete_dependent(state, tx, k, o, "Background", &now);
    }
    Ok(())
}

fn delete_dependent(
    state: &State,
    tx: &mut Txn<'_>,
    k: &ObjectKey,
    o: Value,
    policy: &str,
    now: &str,
) -> Result<(), ApiError> {
    match state.resource_by_storage(&k.resource) {
        Some(res) => {
            delete_in(tx, &res, k, o, policy, now)?;
        }
        None => {
            tx.remove(k, o)?;
        }
    }
    Ok(())
}

fn drop_finalizer(tx: &mut Txn<'_>, k: &ObjectKey, o: &Value, which: &str) -> Result<(), ApiError> {
    let mut o = o.clone();
    let rest: Vec<String> = finalizers(&o).into_iter().filter(|f| f != which).collect();
    if rest.is_empty() {
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
        tx.remove(k, o)?;
    } else {
        o["metadata"]["finalizers"] = json!(rest);
        tx.put(k, o, EventType::Modified)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str, uid: &str, owner: Option<&str>) -> Value {
        let mut o = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "uid": uid}});
        if let Some(owner) = owner {
            o["metadata"]["ownerReferences"] =
                json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": owner}]);
        }
        o
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("/configmaps", "default", name)
    }

    fn put(state: &State, name: &str, uid: &str, owner: Option<&str>) {
        state
            .store
            .write(|t| t.put(&key(name), cm(name, uid, owner), EventType::Added))
            .unwrap();
    }

    fn remove(state: &State, name: &str) {
        state
            .store
            .write(|t| {
                let last = t.get(&key(name))?.unwrap();
                t.remove(&key(name), last)
            })
            .unwrap();
    }

    fn state() -> std::sync::Arc<State> {
        State::new(Store::in_memory().unwrap(), None, "127.0.0.1:1".into()).unwrap()
    }

    #[test]
    fn a_removed_owner_takes_its_dependents_through_the_change_feed() {
        let s = state();
        collect(&s); // the start-up resync
        put(&s, "owner", "u-owner", None);
        put(&s, "dep", "u-dep", Some("u-owner"));
        put(&s, "other", "u-other", None);
        collect(&s);
        assert!(s.store.get(&key("dep")).unwrap().is_some());
        remove(&s, "owner");
        collect(&s);
        assert!(s.store.get(&key("dep")).unwrap().is_none(), "collected");
        assert!(s.store.get(&key("other")).unwrap().is_some());
    }

    #[test]
    fn a_collector_that_fell_behind_resyncs_from_the_indexes() {
        let s = state();
        collect(&s);
        put(&s, "owner", "u-owner", None);
        put(&s, "dep", "u-dep", Some("u-owner"));
        remove(&s, "owner");
        // More changes than the feed holds: the removal is lost from it.
        s.store
            .write(|t| {
                for i in 0..17_000 {
                    t.put(
                        &key("busy"),
                        cm("busy", &format!("u{i}"), None),
                        EventType::Modified,
                    )?;
                }
                Ok::<_, crate::storage::StoreError>(())
            })
            .unwrap();
        collect(&s);
        assert!(s.store.get(&key("dep")).unwrap().is_none(), "collected");
    }
}
