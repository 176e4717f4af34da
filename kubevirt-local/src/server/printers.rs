//! Printer cells kube-apiserver computes for built-in kinds rather than reading a path: the
//! storage kinds' access mode abbreviations (`RWO,ROX`), a claim's class and the defaults shown
//! for unset fields (`<unset>`, `Delete`, `Immediate`), `Terminating` while an object is being
//! deleted, and `(default)` after the default StorageClass's name.

use crate::registry::{Column, Resource};
use serde_json::{Value, json};

/// The annotation that makes a StorageClass the default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The older (beta) spelling, still honoured.
pub const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// Is `class` (a StorageClass) annotated as the default?
pub fn is_default_class(class: &Value) -> bool {
    let a = &class["metadata"]["annotations"];
    [DEFAULT_CLASS_ANNOTATION, BETA_DEFAULT_CLASS_ANNOTATION]
        .iter()
        .any(|k| a[*k].as_str() == Some("true"))
}

/// `ReadWriteOnce` and friends abbreviated and joined as kubectl shows them, in upstream's order.
pub fn access_modes(modes: &Value) -> String {
    let have: Vec<&str> = modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| have.contains(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

fn string(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn or_unset(v: &Value) -> Value {
    json!(v.as_str().unwrap_or("<unset>"))
}

fn phase(obj: &Value) -> Value {
    if obj["metadata"].get("deletionTimestamp").is_some() {
        json!("Terminating")
    } else {
        json!(string(&obj["status"]["phase"]))
    }
}

/// An APIService's AVAILABLE cell, as kube-aggregator prints it: `True`, `False (Reason)` or
/// `Unknown`.
fn apiservice_available(status: &Value) -> Value {
    let cond = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Available");
    json!(match cond {
        None => "Unknown".to_string(),
        Some(c) if c["status"] == "True" => "True".to_string(),
        Some(c) => match c["reason"].as_str() {
            Some(r) if !r.is_empty() => format!("{} ({r})", string(&c["status"])),
            _ => string(&c["status"]),
        },
    })
}

/// The name cell of `obj`, when the kind prints more than the name.
pub fn name(res: &Resource, obj: &Value) -> Option<Value> {
    let name = obj["metadata"]["name"].as_str()?;
    (is_storage(res, "StorageClass") && is_default_class(obj))
        .then(|| json!(format!("{name} (default)")))
}

fn is_storage(res: &Resource, kind: &str) -> bool {
    res.builtin && res.kind == kind && matches!(res.group.as_str(), "" | "storage.k8s.io")
}

/// The cell of `column` for `obj`, when upstream computes it; `None`: read the column's path.
pub fn cell(res: &Resource, column: &Column, obj: &Value) -> Option<Value> {
    if !res.builtin {
        return None;
    }
    let spec = &obj["spec"];
    let status = &obj["status"];
    match (res.kind.as_str(), column.name.as_str()) {
        ("PersistentVolumeClaim", "Status") | ("PersistentVolume", "Status") => Some(phase(obj)),
        ("PersistentVolumeClaim", c @ ("Volume" | "Capacity" | "Access Modes")) => {
            let bound = spec["volumeName"].as_str().is_some_and(|v| !v.is_empty());
            Some(json!(match (bound, c) {
                (false, _) => String::new(),
                (true, "Volume") => string(&spec["volumeName"]),
                (true, "Capacity") => string(&status["capacity"]["storage"]),
                (true, _) => access_modes(&status["accessModes"]),
            }))
        }
        ("PersistentVolumeClaim", "StorageClass") => Some(json!(
            obj["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| string(&spec["storageClassName"]))
        )),
        ("PersistentVolume", "Capacity") => Some(json!(string(&spec["capacity"]["storage"]))),
        ("PersistentVolume", "Access Modes") => Some(json!(access_modes(&spec["accessModes"]))),
        ("PersistentVolume", "Reclaim Policy") => {
            Some(json!(string(&spec["persistentVolumeReclaimPolicy"])))
        }
        ("PersistentVolume", "Claim") => Some(json!(match spec["claimRef"]["name"].as_str() {
            Some(n) => format!("{}/{n}", string(&spec["claimRef"]["namespace"])),
            None => String::new(),
        })),
        ("PersistentVolume", "StorageClass") => Some(json!(string(&spec["storageClassName"]))),
        ("PersistentVolume", "Reason") => Some(json!(string(&status["reason"]))),
        ("PersistentVolume" | "PersistentVolumeClaim", "VolumeAttributesClass") => {
            Some(or_unset(&spec["volumeAttributesClassName"]))
        }
        ("PersistentVolume" | "PersistentVolumeClaim", "VolumeMode") => {
            Some(or_unset(&spec["volumeMode"]))
        }
        ("APIService", "Service") => Some(json!(match spec["service"]["name"].as_str() {
            Some(n) => format!("{}/{n}", string(&spec["service"]["namespace"])),
            None => "Local".to_string(),
        })),
        ("APIService", "Available") => Some(apiservice_available(status)),
        ("Pod", "Ready") => Some(super::pod_columns::ready(obj)),
        ("Pod", "Status") => Some(super::pod_columns::status(obj)),
        ("Pod", "Restarts") => Some(super::pod_columns::restarts(obj, jiff::Timestamp::now())),
        ("Pod", "IP") => Some(super::pod_columns::or_none(&status["podIP"])),
        ("Pod", "Node") => Some(super::pod_columns::or_none(&spec["nodeName"])),
        ("Pod", "Nominated Node") => {
            Some(super::pod_columns::or_none(&status["nominatedNodeName"]))
        }
        ("Pod", "Readiness Gates") => Some(super::pod_columns::readiness_gates(obj)),
        ("StorageClass", "ReclaimPolicy") => {
            Some(json!(obj["reclaimPolicy"].as_str().unwrap_or("Delete")))
        }
        ("StorageClass", "VolumeBindingMode") => Some(json!(
            obj["volumeBindingMode"].as_str().unwrap_or("Immediate")
        )),
        ("StorageClass", "AllowVolumeExpansion") => Some(json!(
            obj["allowVolumeExpansion"].as_bool().unwrap_or(false)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_modes_in_upstream_order() {
        assert_eq!(
            access_modes(&json!(["ReadWriteMany", "ReadWriteOnce", "Bogus"])),
            "RWO,RWX"
        );
        assert_eq!(access_modes(&json!(null)), "");
    }

    #[test]
    fn default_class_by_either_annotation() {
        assert!(is_default_class(
            &json!({"metadata": {"annotations": {DEFAULT_CLASS_ANNOTATION: "true"}}})
        ));
        assert!(is_default_class(
            &json!({"metadata": {"annotations": {BETA_DEFAULT_CLASS_ANNOTATION: "true"}}})
        ));
        assert!(!is_default_class(
            &json!({"metadata": {"annotations": {DEFAULT_CLASS_ANNOTATION: "false"}}})
        ));
    }
}
