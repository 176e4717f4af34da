//! Patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch (built-in
//! kinds) and server-side apply.

use serde_json::{Map, Value};
use thiserror::Error;

/// Why a patch could not be applied.
#[derive(Debug, Error)]
pub enum PatchError {
    /// A JSON patch that is not a list.
    #[error("a JSON patch is a list of operations")]
    NotAList,
    /// A JSON patch operation that is not one (unknown `op`, missing `path`, ...).
    #[error("{0}")]
    Operation(#[source] serde_json::Error),
    /// A `test` of a present value against `null` failed.
    #[error("testing value {path} failed: found {found}, expected null")]
    NullTest {
        /// The tested path.
        path: String,
        /// What it holds.
        found: Value,
    },
    /// A JSON patch `test` failed, or an operation's path is wrong.
    #[error("{0}")]
    Failed(#[from] json_patch::PatchError),
}

impl PatchError {
    /// Whether the patch itself is malformed (400), rather than not applicable to the object
    /// (422).
    pub fn is_malformed(&self) -> bool {
        matches!(self, PatchError::NotAList | PatchError::Operation(_))
    }
}

/// The patch content types the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// From a Content-Type header.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        Some(match base {
            "application/merge-patch+json" => PatchType::Merge,
            "application/json-patch+json" => PatchType::Json,
            "application/strategic-merge-patch+json" => PatchType::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
            _ => return None,
        })
    }
}

/// Apply `patch` of type `kind` to `doc`.
pub fn apply(kind: PatchType, doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match kind {
        PatchType::Merge | PatchType::Apply => {
            json_patch::merge(doc, patch);
            Ok(())
        }
        PatchType::Json => json(doc, patch),
        PatchType::Strategic => {
            strategic(doc, patch);
            Ok(())
        }
    }
}

/// RFC 6902 with Kubernetes' reading of `test`: testing a missing path for `null` passes
/// (kube-runtime's finalizer helper relies on it).
fn json(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch.as_array().ok_or(PatchError::NotAList)?;
    let mut kept = Vec::with_capacity(ops.len());
    for op in ops {
        let is_null_test = op.get("op").and_then(Value::as_str) == Some("test")
            && op.get("value") == Some(&Value::Null);
        if is_null_test {
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            match doc.pointer(path) {
                None | Some(Value::Null) => continue,
                Some(v) => {
                    return Err(PatchError::NullTest {
                        path: path.to_string(),
                        found: v.clone(),
                    });
                }
            }
        }
        kept.push(op.clone());
    }
    let parsed: json_patch::Patch =
        serde_json::from_value(Value::Array(kept)).map_err(PatchError::Operation)?;
    Ok(json_patch::patch(doc, &parsed)?)
}

/// The merge keys of lists in built-in kinds.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "volumeMounts"
        | "imagePullSecrets"
        | "volumeDevices" => "name",
        "ports" => "containerPort",
        "ownerReferences" => "uid",
        "conditions" => "type",
        "tolerations" => "key",
        "hostAliases" => "ip",
        _ => return None,
    })
}

/// A strategic merge patch: a merge patch whose lists with a merge key merge element-wise, with the
/// `$patch` directives; other directives are dropped.
pub fn strategic(doc: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *doc = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = p.clone();
        clean.remove("$patch");
        *doc = Value::Object(clean);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(d) = doc.as_object_mut() else { return };
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(remove)) = (d.get_mut(field), v.as_array()) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        match v {
            Value::Null => {
                d.remove(k);
            }
            Value::Object(o) if o.get("$patch").and_then(Value::as_str) == Some("delete") => {
                d.remove(k);
            }
            Value::Array(items) => match (merge_key(k), d.get_mut(k)) {
                (Some(key), Some(Value::Array(existing))) => merge_list(existing, items, key),
                _ => {
                    d.insert(
                        k.clone(),
                        Value::Array(
                            items
                                .iter()
                                .filter(|i| !is_directive_item(i))
                                .cloned()
                                .collect(),
                        ),
                    );
                }
            },
            Value::Object(_) => strategic(d.entry(k.clone()).or_insert(Value::Null), v),
            other => {
                d.insert(k.clone(), other.clone());
            }
        }
    }
}

fn is_directive_item(v: &Value) -> bool {
    v.get("$patch").is_some()
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key);
        let pos = id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (Some(i), false) => strategic(&mut existing[i], item),
            (None, false) => existing.push(item.clone()),
            (None, true) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patch_test_null_on_missing_path_passes() {
        let mut doc = json!({"metadata": {"name": "a"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}
        ]);
        apply(PatchType::Json, &mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["x"]));
        assert!(
            apply(PatchType::Json, &mut doc, &patch).is_err(),
            "the test must now fail"
        );
    }

    #[test]
    fn strategic_merges_lists_by_key() {
        let mut doc = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]}});
        strategic(
            &mut doc,
            &json!({"spec": {"containers": [{"name": "a", "image": "2"}, {"name": "b", "$patch": "delete"}, {"name": "c"}],
            "$setElementOrder/containers": [{"name": "a"}]}}),
        );
        assert_eq!(
            doc,
            json!({"spec": {"containers": [{"name": "a", "image": "2"}, {"name": "c"}]}})
        );
    }

    #[test]
    fn merge_patch_removes_nulls() {
        let mut doc = json!({"a": 1, "b": {"c": 2}});
        apply(
            PatchType::Merge,
            &mut doc,
            &json!({"a": null, "b": {"d": 3}}),
        )
        .unwrap();
        assert_eq!(doc, json!({"b": {"c": 2, "d": 3}}));
    }
}
