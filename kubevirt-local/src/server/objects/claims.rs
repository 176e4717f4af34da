//! Where the write path applies kube-apiserver's claim, volume and StorageClass rules
//! ([`crate::semantics::claims`], [`crate::semantics::storage_classes`]): defaults,
//! DefaultStorageClass and the in-use protection finalizers on create; the update rules and the
//! resize check on writes through the main endpoint.

use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::claims::{self, STORAGE_CLASSES};
use crate::semantics::schema::Cause;
use crate::semantics::storage_classes;
use crate::storage::{ObjectKey, Txn};
use serde_json::Value;

fn kind_of(res: &Resource) -> Option<&str> {
    let storage = match res.group.as_str() {
        "" => matches!(
            res.kind.as_str(),
            "PersistentVolumeClaim" | "PersistentVolume"
        ),
        "storage.k8s.io" => res.kind == "StorageClass",
        _ => false,
    };
    (storage && res.builtin).then_some(res.kind.as_str())
}

fn refuse(res: &Resource, obj: &Value, causes: &[Cause]) -> Result<(), ApiError> {
    if causes.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    Err(ApiError::invalid(res, name, causes))
}

/// A new claim, volume or class: its defaults, its status, its finalizer, the default class,
/// the checks.
pub(super) fn on_create(
    res: &Resource,
    obj: &mut Value,
    classes: impl FnOnce() -> Result<Vec<Value>, ApiError>,
) -> Result<(), ApiError> {
    let Some(kind) = kind_of(res) else {
        return Ok(());
    };
    if kind == "StorageClass" {
        storage_classes::defaults(obj);
        return refuse(res, obj, &storage_classes::validate(obj));
    }
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
    if kind == "PersistentVolume" {
        obj["status"]["lastPhaseTransitionTime"] = super::super::state::now().into();
        return refuse(res, obj, &claims::validate_volume(obj));
    }
    claims::admit_default_class(obj, &classes()?);
    refuse(res, obj, &claims::validate_claim(obj))
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
    match kind {
        "StorageClass" => {
            storage_classes::defaults(new);
            return refuse(res, new, &storage_classes::validate_update(old, new));
        }
        "PersistentVolume" => {
            claims::defaults(kind, new, false);
            return refuse(res, new, &claims::validate_volume_update(old, new));
        }
        _ => claims::defaults(kind, new, false),
    }
    refuse(res, new, &claims::validate_claim_update(old, new))?;
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
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

/// A volume's phase changed (through either endpoint): `status.lastPhaseTransitionTime` is now.
pub(super) fn on_phase(res: &Resource, old: &Value, new: &mut Value, now: &str) {
    if kind_of(res) == Some("PersistentVolume")
        && new["status"].is_object()
        && old["status"]["phase"] != new["status"]["phase"]
    {
        new["status"]["lastPhaseTransitionTime"] = now.into();
    }
}
