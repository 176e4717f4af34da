//! OpenAPI v3 documents built from the served schemas: enough for `kubectl apply`'s
//! field-validation check and for `kubectl explain` on custom resources.

use crate::registry::Registry;
use serde_json::{Map, Value, json};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per served group/version.
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in registry.group_versions() {
        for v in versions {
            let p = gv_path(&group, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=0")}),
            );
        }
    }
    json!({"paths": paths})
}

/// The document of one group/version, if served.
pub fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in registry
        .all()
        .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
    {
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let schema_name = format!(
            "{}.{}.{}",
            if group.is_empty() {
                "io.k8s.api.core"
            } else {
                group
            },
            version,
            r.kind
        );
        let mut schema = r.schema(version).cloned().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name.clone(), schema);
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        let mut content_types = vec![
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ];
        if r.builtin {
            content_types.push("application/strategic-merge-patch+json");
        }
        let body: Map<String, Value> = content_types
            .iter()
            .map(|c| (c.to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        let params = json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
                             {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                             {"name": "dryRun", "in": "query", "schema": {"type": "string"}}]);
        let op = |verb: &str| {
            json!({"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": verb, "parameters": params,
            "responses": {"200": {"content": {"application/json": {"schema": reference}}}}})
        };
        let mut item = json!({"get": op("get"), "put": op("put"), "delete": op("delete"), "patch": op("patch")});
        item["patch"]["requestBody"] = json!({"content": body});
        item["put"]["requestBody"] =
            json!({"content": {"application/json": {"schema": reference}}});
        let base = gv_path(group, version);
        let collection = if r.namespaced {
            format!("/{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("/{base}/{}", r.plural)
        };
        let mut coll = json!({"get": op("list"), "post": op("post")});
        coll["post"]["requestBody"] =
            json!({"content": {"application/json": {"schema": reference}}});
        paths.insert(format!("{collection}/{{name}}"), item);
        paths.insert(collection, coll);
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "kubevirt-rs local API server", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
