//! Rewrites of a derived openAPIV3Schema: embedded object metadata, CEL rules, descriptions.

use super::{CrdOptions, cel};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use serde_json::{Map, Value, json};

pub(super) fn finish(schema: &mut JSONSchemaProps, kind: &str, options: &CrdOptions) {
    let Ok(mut value) = serde_json::to_value(&*schema) else {
        return;
    };
    type_meta(&mut value);
    // Objects embedded whole (a DataImportCron's DataVolume template) carry their type meta too.
    if kind == "DataImportCron"
        && let Some(template) = super::cel::locate(&mut value, &["spec", "template"])
    {
        type_meta(template);
    }
    if let Some(props) = value.get_mut("properties").and_then(Value::as_object_mut) {
        for (name, prop) in props.iter_mut() {
            if name != "metadata" {
                embedded_metadata(prop);
            }
        }
    }
    unsigned_formats(&mut value);
    cel::attach(&mut value, kind);
    if !options.descriptions {
        strip_descriptions(&mut value, 0);
    }
    if let Ok(done) = serde_json::from_value(value) {
        *schema = done;
    }
}

/// The root lists `apiVersion`, `kind` and `metadata` as upstream's CRDs do.
pub(crate) fn type_meta(root: &mut Value) {
    if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
        props
            .entry("apiVersion")
            .or_insert_with(|| json!({"type": "string"}));
        props
            .entry("kind")
            .or_insert_with(|| json!({"type": "string"}));
        props
            .entry("metadata")
            .or_insert_with(|| json!({"type": "object"}));
    }
}

/// Object metadata inside templates is stored as upstream does: an object whose content is preserved
/// (the API server validates only the root object's metadata).
fn embedded_metadata(node: &mut Value) {
    match node {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "metadata" && looks_like_object_meta(v) {
                    *v = json!({"type": "object", "nullable": true, "x-kubernetes-preserve-unknown-fields": true});
                } else {
                    embedded_metadata(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(embedded_metadata),
        _ => {}
    }
}

fn looks_like_object_meta(v: &Value) -> bool {
    let props = v.get("properties").and_then(Value::as_object);
    props.is_some_and(|p: &Map<String, Value>| {
        p.contains_key("generateName") && p.contains_key("ownerReferences")
    })
}

/// schemars writes Rust's unsigned types as `uint32`/`uint64` formats; Kubernetes knows `int32`/`int64`
/// (`minimum: 0` stays).
fn unsigned_formats(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(f)) = map.get_mut("format") {
                match f.as_str() {
                    "uint8" | "uint16" => *f = "int32".into(),
                    "uint32" | "uint64" => *f = "int64".into(),
                    _ => {}
                }
            }
            map.values_mut().for_each(unsigned_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_formats),
        _ => {}
    }
}

fn strip_descriptions(node: &mut Value, depth: usize) {
    match node {
        Value::Object(map) => {
            if depth > 0 {
                map.remove("description");
            }
            for (k, v) in map.iter_mut() {
                // Property names are data, not schema keywords: a field called "description" stays.
                if k == "properties" {
                    if let Value::Object(props) = v {
                        props
                            .values_mut()
                            .for_each(|p| strip_descriptions(p, depth + 1));
                    }
                } else {
                    strip_descriptions(v, depth + 1);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|i| strip_descriptions(i, depth + 1)),
        _ => {}
    }
}
