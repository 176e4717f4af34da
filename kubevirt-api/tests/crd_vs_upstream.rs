//! The generated CRD schemas have exactly upstream's fields: every property path in upstream's
//! openAPIV3Schema exists in ours (no field lost) and ours has none upstream lacks (none invented).

mod common;

use kubevirt_api::crd::CrdOptions;
use kubevirt_api::object::all_crds;
use serde_json::Value;
use std::collections::BTreeSet;

/// Property paths of a schema; contents of preserve-unknown-fields nodes are opaque.
fn paths(node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = format!("{prefix}.{k}");
            out.insert(p.clone());
            paths(v, &p, out);
        }
    }
    if let Some(items) = node.get("items") {
        paths(items, &format!("{prefix}[]"), out);
    }
    if let Some(ap) = node.get("additionalProperties").filter(|a| a.is_object()) {
        paths(ap, &format!("{prefix}{{}}"), out);
    }
}

fn upstream_schema(kind: &str) -> Option<Value> {
    let dir = common::fixtures_dir();
    let lower = kind.to_lowercase();
    if let Ok(text) =
        std::fs::read_to_string(dir.join(format!("kubevirt-crd-validation-{lower}.yaml")))
    {
        let doc = kubevirt_api::codec::documents_from_yaml(&text)
            .ok()?
            .remove(0)
            .value;
        return Some(doc["openAPIV3Schema"].clone());
    }
    let text = std::fs::read_to_string(dir.join(format!("cdi-crd-{lower}.yaml"))).ok()?;
    let doc = kubevirt_api::codec::documents_from_yaml(&text)
        .ok()?
        .remove(0)
        .value;
    Some(doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone())
}

/// Fields newer than the copies upstream KubeVirt vendors. CDI's current DataVolumeSpec has fields
/// KubeVirt's vendored copy lacks (the typed API has the union, so a VM's dataVolumeTemplates carry
/// them through to the DataVolume).
const NEWER_UPSTREAMS: &[&str] = &[
    "dataVolumeTemplates[].spec.serviceAccountName",
    "dataVolumeTemplates[].spec.source.http.checksum",
    "dataVolumeTemplates[].spec.source.http.insecureSkipVerify",
    "dataVolumeTemplates[].spec.source.vddk.certConfigMap",
    // Kubernetes core types come from k8s-openapi (Kubernetes 1.37), newer than upstream's vendored copy.
    "httpGet.protocol",
    "downwardAPI.fields[].user",
];

#[test]
fn generated_schemas_have_exactly_upstreams_fields() {
    let mut compared = 0;
    let mut report = Vec::new();
    for crd in all_crds(&CrdOptions::default()) {
        let kind = crd.spec.names.kind.clone();
        let Some(upstream) = upstream_schema(&kind) else {
            continue;
        };
        let ours = common::storage_schema(&crd);
        let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
        paths(&upstream, "", &mut a);
        paths(&ours, "", &mut b);
        let lost: Vec<_> = a.difference(&b).collect();
        let invented: Vec<_> = b
            .difference(&a)
            .filter(|p| !NEWER_UPSTREAMS.iter().any(|u| p.ends_with(u)))
            .collect();
        if !lost.is_empty() || !invented.is_empty() {
            report.push(format!(
                "{kind}:\n  lost: {lost:?}\n  invented: {invented:?}"
            ));
        }
        compared += 1;
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
    assert!(compared >= 17, "only {compared} kinds compared");
}
