//! The generated CRDs: structural schemas (as the API server requires) that accept every upstream
//! example of their kind, checked with an independent JSON-schema validator.

mod common;

use kubevirt_api::crd::CrdOptions;
use kubevirt_api::object::{KINDS, all_crds};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Paths where `schema` breaks the structural-schema rules of apiextensions.k8s.io/v1.
fn structural_violations(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = node.as_object() else { return };
    let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let preserve = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if !map.contains_key("type") && !int_or_string && !preserve {
        out.push(format!("{path}: no type"));
    }
    for forbidden in ["$ref", "definitions", "$defs", "oneOf", "allOf", "not"] {
        if map.contains_key(forbidden) {
            out.push(format!("{path}: {forbidden} is not allowed"));
        }
    }
    if let Some(any) = map.get("anyOf") {
        // Allowed only as the int-or-string idiom (value validations without types elsewhere).
        if !int_or_string {
            out.push(format!(
                "{path}: anyOf outside x-kubernetes-int-or-string: {any}"
            ));
        }
    }
    if map.contains_key("properties")
        && map
            .get("additionalProperties")
            .is_some_and(|a| a != &json!(false))
    {
        out.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    for (k, v) in map
        .iter()
        .filter(|(k, _)| k.as_str() == "properties")
        .flat_map(|(_, v)| v.as_object())
        .flatten()
    {
        structural_violations(v, &format!("{path}.{k}"), out);
    }
    if let Some(items) = map.get("items") {
        if !items.is_object() {
            out.push(format!("{path}: items must be one schema"));
        }
        structural_violations(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = map.get("additionalProperties").filter(|a| a.is_object()) {
        structural_violations(ap, &format!("{path}{{}}"), out);
    }
}

/// OpenAPI v3 (Kubernetes dialect) to JSON Schema draft 4.
fn to_json_schema(node: &Value) -> Value {
    match node {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                match k.as_str() {
                    "properties" => {
                        let props = v.as_object().map(|p| {
                            p.iter()
                                .map(|(n, s)| (n.clone(), to_json_schema(s)))
                                .collect()
                        });
                        out.insert(k.clone(), Value::Object(props.unwrap_or_default()));
                    }
                    "items" | "additionalProperties" if v.is_object() => {
                        out.insert(k.clone(), to_json_schema(v));
                    }
                    "anyOf" => {
                        out.insert(
                            k.clone(),
                            Value::Array(
                                v.as_array()
                                    .into_iter()
                                    .flatten()
                                    .map(to_json_schema)
                                    .collect(),
                            ),
                        );
                    }
                    k if k.starts_with("x-kubernetes") || k == "nullable" || k == "description" => {
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            if map.get("nullable") == Some(&json!(true))
                && let Some(Value::String(t)) = out.get("type").cloned()
            {
                out.insert("type".into(), json!([t, "null"]));
            }
            if map.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
                out.remove("type");
                out.remove("anyOf");
                out.insert("type".into(), json!(["integer", "string"]));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[test]
fn crds_are_structural_and_accept_every_upstream_example() {
    let crds = all_crds(&CrdOptions::default());
    assert_eq!(crds.len(), KINDS.len());
    let mut validators = BTreeMap::new();
    for crd in &crds {
        for version in &crd.spec.versions {
            let schema =
                serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
            let mut violations = Vec::new();
            structural_violations(&schema, "", &mut violations);
            assert!(
                violations.is_empty(),
                "{}/{} is not structural:\n{}",
                crd.spec.names.kind,
                version.name,
                violations.join("\n")
            );
        }
        let schema = common::storage_schema(crd);
        let validator = jsonschema::draft4::options()
            .should_validate_formats(true)
            .build(&to_json_schema(&schema))
            .unwrap_or_else(|e| panic!("{}: schema does not compile: {e}", crd.spec.names.kind));
        validators.insert(crd.spec.names.kind.clone(), validator);
    }
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (file, docs) in common::fixture_documents() {
        for doc in docs {
            let kind = doc.value["kind"].as_str().unwrap_or_default();
            let group = doc.value["apiVersion"].as_str().unwrap_or_default();
            let Some(validator) = validators
                .get(kind)
                .filter(|_| group.contains("kubevirt.io"))
            else {
                continue;
            };
            // The user-guide fragments upstream's own schema rejects stay rejected here too.
            let expected_invalid = [
                "userguide-cpu_hotplug-03-VirtualMachine.yaml",
                "userguide-instancetypes-05-VirtualMachine.yaml",
                "userguide-migration_policies-01-MigrationPolicy.yaml",
                "userguide-migration_policies-02-MigrationPolicy.yaml",
                "userguide-migration_policies-04-MigrationPolicy.yaml",
                "userguide-migration_policies-05-MigrationPolicy.yaml",
            ]
            .contains(&file.as_str());
            let errors: Vec<String> = validator
                .iter_errors(&doc.value)
                .map(|e| format!("{}: {e}", e.instance_path()))
                .collect();
            match (errors.is_empty(), expected_invalid) {
                (true, false) | (false, true) => *checked.entry(kind.to_string()).or_default() += 1,
                (false, false) => failures.push(format!(
                    "{file}[{}] {kind}: {}",
                    doc.index,
                    errors.join("; ")
                )),
                (true, true) => failures.push(format!(
                    "{file}: accepted, but upstream's schema rejects it"
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("validated against the generated schemas: {checked:?}");
    assert!(checked.values().sum::<usize>() > 200);
}

#[test]
fn generated_schema_rejects_wrong_types_and_missing_required_fields() {
    let crds = all_crds(&CrdOptions::default());
    let vm = crds
        .iter()
        .find(|c| c.spec.names.kind == "VirtualMachine")
        .unwrap();
    let schema = common::storage_schema(vm);
    let validator = jsonschema::draft4::new(&to_json_schema(&schema)).unwrap();
    let good = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "a"},
        "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}}}}});
    assert!(validator.is_valid(&good));
    let mut wrong_type = good.clone();
    wrong_type["spec"]["template"]["spec"]["domain"]["cpu"] = json!({"cores": "two"});
    assert!(!validator.is_valid(&wrong_type));
    let mut missing = good.clone();
    missing["spec"]["template"]["spec"]["domain"] = json!({});
    let errors: Vec<String> = validator
        .iter_errors(&missing)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.iter().any(|e| e.contains("devices")), "{errors:?}");
}

/// Upstream's printer columns, names and served versions for the main kinds.
#[test]
fn crd_envelopes_match_upstream() {
    let crds = all_crds(&CrdOptions::default());
    let get = |kind: &str| crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
    let vm = get("VirtualMachine");
    assert_eq!(
        vm.metadata.name.as_deref(),
        Some("virtualmachines.kubevirt.io")
    );
    assert_eq!(
        vm.spec.names.short_names.as_deref(),
        Some(&["vm".to_string(), "vms".to_string()][..])
    );
    assert_eq!(
        vm.spec.names.categories.as_deref(),
        Some(&["all".to_string()][..])
    );
    let cols: Vec<_> = vm.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Age", "Status", "Ready"]);
    let versions: Vec<_> = vm
        .spec
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.storage, v.deprecated))
        .collect();
    assert_eq!(
        versions,
        [("v1", true, None), ("v1alpha3", false, Some(true))]
    );
    let cluster = get("VirtualMachineClusterInstancetype");
    assert_eq!(cluster.spec.scope, "Cluster");
    assert_eq!(
        cluster.metadata.name.as_deref(),
        Some("virtualmachineclusterinstancetypes.instancetype.kubevirt.io")
    );
    let dv = get("DataVolume");
    let cols: Vec<_> = dv.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(cols, ["Phase", "Progress", "Restarts", "Age"]);
    let preset = get("VirtualMachineInstancePreset");
    let storage: Vec<_> = preset
        .spec
        .versions
        .iter()
        .filter(|v| v.storage)
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(storage, ["v1alpha3"]);
}
