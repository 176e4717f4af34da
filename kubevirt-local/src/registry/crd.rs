//! Turning a stored CustomResourceDefinition into a served [`Resource`].

use super::{Column, Resource, Scale};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Why a CRD cannot be served: the field, the API's reason and a message, as the API reports an
/// invalid object's cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct CrdError {
    /// The field path (`spec.names.plural`).
    pub field: &'static str,
    /// `FieldValueRequired`, `FieldValueInvalid` or `FieldValueNotSupported`.
    pub reason: &'static str,
    /// What is wrong, in the API's words.
    pub message: String,
}

impl CrdError {
    fn required(field: &'static str) -> Self {
        Self {
            field,
            reason: "FieldValueRequired",
            message: "Required value".into(),
        }
    }
}

/// The resource a CRD (as JSON) defines, or why it cannot be served.
pub fn resource_from_crd(crd: &Value) -> Result<Resource, CrdError> {
    let spec = crd.get("spec").ok_or_else(|| CrdError::required("spec"))?;
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let names = spec
        .get("names")
        .ok_or_else(|| CrdError::required("spec.names"))?;
    let group = s(spec, "group").ok_or_else(|| CrdError::required("spec.group"))?;
    let plural = s(names, "plural").ok_or_else(|| CrdError::required("spec.names.plural"))?;
    let kind = s(names, "kind").ok_or_else(|| CrdError::required("spec.names.kind"))?;
    let expected = format!("{plural}.{group}");
    if crd.pointer("/metadata/name").and_then(Value::as_str) != Some(expected.as_str()) {
        return Err(CrdError {
            field: "metadata.name",
            reason: "FieldValueInvalid",
            message: format!(
                "Invalid value: must be spec.names.plural+\".\"+spec.group ({expected})"
            ),
        });
    }
    let scope = s(spec, "scope").unwrap_or_else(|| "Namespaced".into());
    if scope != "Namespaced" && scope != "Cluster" {
        return Err(CrdError {
            field: "spec.scope",
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {scope:?}: supported values: \"Cluster\", \"Namespaced\""
            ),
        });
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .ok_or_else(|| CrdError::required("spec.versions"))?;
    let served: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("served") == Some(&json!(true)))
        .collect();
    let storage: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("storage") == Some(&json!(true)))
        .collect();
    if storage.len() != 1 {
        return Err(CrdError {
            field: "spec.versions",
            reason: "FieldValueInvalid",
            message: "Invalid value: must have exactly one version marked as storage version"
                .into(),
        });
    }
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let storage_name = s(storage[0], "name").unwrap_or_default();
    let mut ordered = vec![storage_name.clone()];
    ordered.extend(
        served
            .iter()
            .filter_map(|v| s(v, "name"))
            .filter(|n| *n != storage_name),
    );
    let storage_v = storage[0];
    let mut schemas = BTreeMap::new();
    let mut deprecated = BTreeMap::new();
    for v in &served {
        let name = s(v, "name").unwrap_or_default();
        if let Some(schema) = v.pointer("/schema/openAPIV3Schema") {
            schemas.insert(name.clone(), schema.clone());
        }
        if v.get("deprecated") == Some(&json!(true)) {
            let warning = s(v, "deprecationWarning")
                .unwrap_or_else(|| format!("{group}/{name} {kind} is deprecated"));
            deprecated.insert(name, warning);
        }
    }
    let sub = storage_v.get("subresources");
    let scale = sub.and_then(|x| x.get("scale")).map(|sc| Scale {
        spec_replicas: s(sc, "specReplicasPath").unwrap_or_else(|| ".spec.replicas".into()),
        status_replicas: s(sc, "statusReplicasPath").unwrap_or_else(|| ".status.replicas".into()),
        label_selector: s(sc, "labelSelectorPath"),
    });
    let columns = storage_v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .map(|c| Column {
                    name: s(c, "name").unwrap_or_default(),
                    type_: s(c, "type").unwrap_or_else(|| "string".into()),
                    json_path: s(c, "jsonPath").unwrap_or_default(),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    description: s(c, "description").unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_else(|| {
            vec![Column {
                name: "Age".into(),
                type_: "date".into(),
                json_path: ".metadata.creationTimestamp".into(),
                priority: 0,
                description: String::new(),
            }]
        });
    let selectable_fields = storage_v
        .get("selectableFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| s(f, "jsonPath"))
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    Ok(Resource {
        group,
        versions: ordered,
        deprecated,
        singular: s(names, "singular").unwrap_or_else(|| kind.to_lowercase()),
        plural,
        kind,
        namespaced: scope == "Namespaced",
        short_names: strings(names.get("shortNames")),
        categories: strings(names.get("categories")),
        status: sub.and_then(|x| x.get("status")).is_some(),
        scale,
        columns,
        schemas,
        selectable_fields,
        builtin: false,
        view: super::View::Plain,
    })
}

/// The status the API server gives an accepted CRD (Established, NamesAccepted).
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage") == Some(&json!(true)))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "lastTransitionTime": now, "reason": reason, "message": msg});
    json!({
        "acceptedNames": names,
        "conditions": [
            cond("NamesAccepted", "NoConflicts", "no conflicts found"),
            cond("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    })
}
