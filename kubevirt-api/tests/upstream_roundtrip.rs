//! Every upstream document of a served kind decodes into the typed API and encodes back semantically
//! equal: no field lost, none invented.

mod common;

use kubevirt_api::codec::differences;
use kubevirt_api::object::{KINDS, Object};
use std::collections::BTreeMap;

/// Upstream documents that upstream's own CRD schema rejects (they are user-guide fragments, e.g. for
/// `kubectl patch`, or carry a YAML boolean where the schema wants a string), with the field path our
/// decoder must name. `upstream_schema_agrees` checks each against upstream's openAPIV3Schema.
pub const REJECTED_AS_UPSTREAM_DOES: &[(&str, &str)] = &[
    (
        "userguide-cpu_hotplug-03-VirtualMachine.yaml",
        "spec.template.spec.domain.devices",
    ),
    (
        "userguide-instancetypes-05-VirtualMachine.yaml",
        "spec.template",
    ),
    (
        "userguide-migration_policies-01-MigrationPolicy.yaml",
        "spec.selectors",
    ),
    (
        "userguide-migration_policies-02-MigrationPolicy.yaml",
        "spec.selectors.namespaceSelector.hpc-workloads",
    ),
    (
        "userguide-migration_policies-04-MigrationPolicy.yaml",
        "spec.selectors.namespaceSelector.hpc-workloads",
    ),
    (
        "userguide-migration_policies-05-MigrationPolicy.yaml",
        "spec.selectors.namespaceSelector.hpc-workloads",
    ),
];

#[test]
fn every_upstream_document_round_trips() {
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (file, docs) in common::fixture_documents() {
        for doc in docs {
            let kind = doc
                .value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            let group = doc
                .value
                .get("apiVersion")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            if !KINDS.contains(&kind.as_str()) || !group.contains("kubevirt.io") {
                continue;
            }
            let expected_rejection = REJECTED_AS_UPSTREAM_DOES
                .iter()
                .find(|(f, _)| *f == file)
                .map(|(_, p)| *p);
            let obj = match (Object::decode(&doc.value), expected_rejection) {
                (Ok(o), None) => o,
                (Err(e), None) => {
                    failures.push(format!("{file}[{}] {kind}: {e}", doc.index));
                    continue;
                }
                (Ok(_), Some(path)) => {
                    failures.push(format!(
                        "{file}: accepted, but upstream rejects it at {path}"
                    ));
                    continue;
                }
                (Err(e), Some(path)) => {
                    let text = e.to_string();
                    // A missing field is reported on its parent by serde; name it in full.
                    let (parent, field) = path.rsplit_once('.').unwrap_or(("", path));
                    let named = text.starts_with(&format!("{path}:"))
                        || (text.starts_with(&format!("{parent}:"))
                            && text.contains(&format!("`{field}`")));
                    if !named {
                        failures.push(format!(
                            "{file}: rejected with \"{text}\", expected the path {path}"
                        ));
                    }
                    *per_kind.entry(format!("{kind} (rejected)")).or_default() += 1;
                    continue;
                }
            };
            let back = obj.encode().expect("encode");
            let mut input = doc.value.clone();
            if input.get("metadata").is_none() {
                input["metadata"] = serde_json::json!({});
            }
            // Older served versions decode into the storage version.
            input["apiVersion"] = back["apiVersion"].clone();
            let diff = differences(&input, &back);
            if !diff.is_empty() {
                let paths: Vec<_> = diff.iter().take(10).map(|p| p.to_string()).collect();
                failures.push(format!(
                    "{file}[{}] {kind}: differs at {}",
                    doc.index,
                    paths.join(", ")
                ));
            }
            *per_kind.entry(kind).or_default() += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} documents failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    println!("round-tripped: {per_kind:?}");
    // The fixture set holds at least these; fewer means documents were silently skipped.
    for (kind, min) in [
        ("VirtualMachine", 10),
        ("VirtualMachineInstance", 10),
        ("VirtualMachineInstanceReplicaSet", 2),
        ("VirtualMachineInstanceMigration", 2),
        ("KubeVirt", 5),
        ("DataVolume", 10),
        ("VirtualMachineSnapshot", 2),
        ("VirtualMachineRestore", 1),
        ("VirtualMachineInstancetype", 2),
        ("VirtualMachineClusterInstancetype", 60),
        ("VirtualMachinePreference", 2),
        ("VirtualMachineClusterPreference", 50),
        ("VirtualMachinePool", 2),
        ("MigrationPolicy", 2),
        ("VirtualMachineExport", 5),
        ("VirtualMachineClone", 2),
    ] {
        let n = per_kind.get(kind).copied().unwrap_or(0);
        assert!(
            n >= min,
            "only {n} {kind} documents found, expected at least {min}"
        );
    }
}

/// The three `apitesting` fixtures populate every field upstream has; both forms must round-trip.
#[test]
fn apitesting_fixtures_populate_and_round_trip() {
    let dir = common::fixtures_dir();
    for kind in ["VirtualMachine", "VirtualMachineInstance", "KubeVirt"] {
        for ext in ["yaml", "json"] {
            let path = dir.join(format!(
                "kubevirt-apitesting-HEAD-kubevirt.io.v1.{kind}.{ext}"
            ));
            let text = std::fs::read_to_string(&path).expect("read apitesting fixture");
            let doc = &kubevirt_api::codec::documents_from_yaml(&text).expect("parse")[0];
            let obj =
                Object::decode(&doc.value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(obj.kind(), kind);
            let diff = differences(&doc.value, &obj.encode().expect("encode"));
            assert!(diff.is_empty(), "{}: differs at {diff:?}", path.display());
        }
    }
}

/// Each document in [`REJECTED_AS_UPSTREAM_DOES`] is rejected by upstream's own openAPIV3Schema at the
/// same path: the field is in its parent's `required` list, or its value has another type.
#[test]
fn upstream_schema_agrees() {
    let dir = common::fixtures_dir();
    for (file, path) in REJECTED_AS_UPSTREAM_DOES {
        let text = std::fs::read_to_string(dir.join(file)).expect("read fixture");
        let doc = kubevirt_api::codec::documents_from_yaml(&text)
            .expect("parse")
            .remove(0)
            .value;
        let kind = doc["kind"].as_str().expect("kind").to_lowercase();
        let schema_text =
            std::fs::read_to_string(dir.join(format!("kubevirt-crd-validation-{kind}.yaml")))
                .expect("upstream schema");
        let schema = kubevirt_api::codec::documents_from_yaml(&schema_text)
            .expect("schema")
            .remove(0)
            .value;
        let mut node = &schema["openAPIV3Schema"];
        let mut value = &doc;
        let segments: Vec<&str> = path.split('.').collect();
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let present = value.get(*seg).is_some();
            if last && !present {
                let required = node["required"]
                    .as_array()
                    .expect("parent has a required list");
                assert!(
                    required.iter().any(|r| r == seg),
                    "{file}: upstream does not require {path}"
                );
                break;
            }
            node = match node["properties"].get(*seg) {
                Some(n) => n,
                None => &node["additionalProperties"],
            };
            value = &value[*seg];
            if last {
                let want = node["type"].as_str().expect("leaf type");
                let is_string = value.is_string();
                assert!(
                    want == "string" && !is_string,
                    "{file}: upstream accepts {path} = {value}"
                );
            } else if value.is_null() {
                panic!("{file}: {path} is not where the document breaks upstream's schema");
            }
        }
    }
}
