//! Deletion with finalizers and propagation policies, garbage collection of dependents
//! (ownerReferences), and namespace termination.

use super::state::{CRD_RESOURCE, NAMESPACE_RESOURCE, State, now};
use crate::error::ApiError;
use crate::registry::Resource;
use crate::storage::{EventType, ObjectKey, Txn};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};

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

/// Run garbage collection until nothing changes: background-cascade dependents of deleted owners,
/// foreground and orphan finalizers, and terminating namespaces.
pub fn collect(state: &State) {
    for _ in 0..32 {
        match state.store.write(|tx| pass(state, tx)) {
            Ok(true) => continue,
            Ok(false) => break,
            Err(e) => {
                eprintln!("garbage collection: {e}");
                break;
            }
        }
    }
}

fn pass(state: &State, tx: &mut Txn<'_>) -> Result<bool, ApiError> {
    let mut all: Vec<(ObjectKey, Value)> = Vec::new();
    for r in tx.resources()? {
        all.extend(tx.list(&r, None)?);
    }
    let uids: HashMap<String, usize> = all
        .iter()
        .enumerate()
        .filter_map(|(i, (_, o))| o["metadata"]["uid"].as_str().map(|u| (u.to_string(), i)))
        .collect();
    let owners_of = |o: &Value| -> Vec<String> {
        o["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["uid"].as_str())
            .map(str::to_string)
            .collect()
    };
    let now = now();
    let mut changed = false;
    let terminating: HashSet<String> = all
        .iter()
        .filter(|(k, o)| {
            k.resource == NAMESPACE_RESOURCE && o["metadata"].get("deletionTimestamp").is_some()
        })
        .map(|(k, _)| k.name.clone())
        .collect();
    for (k, o) in &all {
        let deleting = o["metadata"].get("deletionTimestamp").is_some();
        let fins = finalizers(o);
        let owned_by_me = |dep: &Value| {
            owners_of(dep)
                .iter()
                .any(|u| Some(u.as_str()) == o["metadata"]["uid"].as_str())
        };
        // Orphan: strip ownerReferences to this owner, then drop the finalizer.
        if deleting && fins.iter().any(|f| f == ORPHAN) {
            for (dk, dep) in all.iter().filter(|(_, d)| owned_by_me(d)) {
                let mut d = dep.clone();
                if let Some(refs) = d["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != o["metadata"]["uid"]);
                }
                tx.put(dk, d, EventType::Modified)?;
            }
            drop_finalizer(tx, k, o, ORPHAN)?;
            return Ok(true);
        }
        // Foreground: dependents first, then the owner.
        if deleting && fins.iter().any(|f| f == FOREGROUND) {
            let deps: Vec<&(ObjectKey, Value)> =
                all.iter().filter(|(_, d)| owned_by_me(d)).collect();
            if deps.is_empty() {
                drop_finalizer(tx, k, o, FOREGROUND)?;
                return Ok(true);
            }
            for (dk, dep) in deps {
                if dep["metadata"].get("deletionTimestamp").is_none() {
                    delete_dependent(state, tx, dk, dep.clone(), "Foreground", &now)?;
                    changed = true;
                }
            }
            continue;
        }
        // Background: dependents whose owners are all gone.
        let owners = owners_of(o);
        if !deleting && !owners.is_empty() && owners.iter().all(|u| !uids.contains_key(u)) {
            delete_dependent(state, tx, k, o.clone(), "Background", &now)?;
            changed = true;
            continue;
        }
        // Contents of terminating namespaces.
        if !deleting && !k.namespace.is_empty() && terminating.contains(&k.namespace) {
            delete_dependent(state, tx, k, o.clone(), "Background", &now)?;
            changed = true;
        }
    }
    // A terminating namespace goes once it is empty.
    for ns in &terminating {
        if !all.iter().any(|(k, _)| k.namespace == *ns)
            && let Some((k, o)) = all
                .iter()
                .find(|(k, _)| k.resource == NAMESPACE_RESOURCE && k.name == *ns)
        {
            let mut o = o.clone();
            o["spec"]["finalizers"] = json!([]);
            if finalizers(&o).is_empty() {
                tx.remove(k, o)?;
                changed = true;
            }
        }
    }
    Ok(changed)
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
