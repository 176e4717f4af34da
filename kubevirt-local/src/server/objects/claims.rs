//! Where the write path applies kube-apiserver's claim and volume rules
//! ([`crate::semantics::claims`]): defaults, DefaultStorageClass and the in-use protection
//! finalizers on create, the update rules
//! and the resize check on writes through the main endpoint.

use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::claims::{self, STORAGE_CLASSES};
use crate::storage::{ObjectKey, Txn};
use serde_json::Value;

fn kind_of(res: &Resource) -> Option<&str> {
    (res.group.is_empty() && res.builtin)
        .then_some(res.kind.as_str())
        .filter(|k| matches!(*k, "PersistentVolumeClaim" | "PersistentVolume"))
}

/// A new claim or volume: its defaults, its status, the default class, the claim's checks.
pub(super) fn on_create(
    res: &Resource,
    obj: &mut Value,
    classes: impl FnOnce() -> Result<Vec<Value>, ApiError>,
) -> Result<(), ApiError> {
    let Some(kind) = kind_of(res) else {
        return Ok(());
    };
    claims::defaults(kind, obj, true);
    if let Some(f) = crate::volumes::protection::finalizer_for(kind) {
        let list = &mut obj["metadata"]["finalizers"];
        if !list.is_array() {
            *list = serde_json::json!([]);
        }
        if let Some(list) = list.as_array_mut()
            && !list.iter().any(|x| x == f)
        {
            list.push(f.into());
        }
    }
    if kind == "PersistentVolumeClaim" {
        claims::admit_default_class(obj, &classes()?);
        let causes = claims::validate_claim(obj);
        if !causes.is_empty() {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            return Err(ApiError::invalid(res, name, &causes));
        }
    }
    Ok(())
}

/// A change through the main endpoint: defaults, what may change, and growth only where the
/// class allows expansion.
pub(super) fn on_update(
    tx: &Txn<'_>,
    res: &Resource,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    let Some(kind) = kind_of(res) else {
        return Ok(());
    };
    claims::defaults(kind, new, false);
    if kind != "PersistentVolumeClaim" {
        return Ok(());
    }
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    let causes = claims::validate_claim_update(old, new);
    if !causes.is_empty() {
        return Err(ApiError::invalid(res, name, &causes));
    }
    let class_name = claims::class_of(new);
    let class = if class_name.is_empty() {
        None
    } else {
        tx.get(&ObjectKey::new(STORAGE_CLASSES, "", class_name))?
    };
    if let Some(why) = claims::refuse_resize(old, new, class.as_ref()) {
        return Err(ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: {why}",
            res.qualified()
        )));
    }
    Ok(())
}

/// The StorageClasses, for a claim's default class.
pub(super) fn classes_in(tx: &Txn<'_>) -> Result<Vec<Value>, ApiError> {
    Ok(tx
        .list(STORAGE_CLASSES, None)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}
