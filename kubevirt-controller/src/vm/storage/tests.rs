use serde_json::json;

use super::*;

fn vm() -> VirtualMachine {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "web", "namespace": "prod", "uid": "vm-uid"},
        "spec": {
            "runStrategy": "Always",
            "dataVolumeTemplates": [{
                "metadata": {"name": "web-root", "labels": {"tier": "os"}, "annotations": {"a": "b"}},
                "spec": {"source": {"http": {"url": "http://images/x.qcow2"}},
                         "storage": {"resources": {"requests": {"storage": "2Gi"}}}}
            }],
            "template": {"spec": {
                "priorityClassName": "gold",
                "domain": {"devices": {}},
                "volumes": [
                    {"name": "root", "dataVolume": {"name": "web-root"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "web-data"}},
                    {"name": "shared", "dataVolume": {"name": "golden"}},
                    {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config"}}
                ]
            }}
        }
    }))
    .unwrap()
}

fn dv(name: &str, phase: &str, conditions: serde_json::Value) -> DataVolume {
    serde_json::from_value(json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": name, "namespace": "prod"},
        "spec": {"source": {"blank": {}}},
        "status": {"phase": phase, "conditions": conditions},
    }))
    .unwrap()
}

fn claim(name: &str, phase: &str) -> PersistentVolumeClaim {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "prod"},
        "spec": {}, "status": {"phase": phase},
    }))
    .unwrap()
}

#[test]
fn names_of_what_the_vm_uses() {
    let v = vm();
    assert_eq!(data_volume_names(&v), ["golden", "web-root"]);
    assert_eq!(claim_names(&v), ["golden", "web-data", "web-root"]);
}

#[test]
fn a_template_becomes_an_owned_data_volume() {
    let v = vm();
    let made = missing(&v, &Storage::default());
    assert_eq!(made.len(), 1);
    let d = &made[0];
    assert_eq!(d.metadata.name.as_deref(), Some("web-root"));
    assert_eq!(d.metadata.namespace.as_deref(), Some("prod"));
    let labels = d.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["tier"], "os");
    assert_eq!(labels[CREATED_BY_LABEL], "vm-uid");
    let annotations = d.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["a"], "b");
    assert_eq!(annotations[ALLOW_CLAIM_ADOPTION], "true");
    let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("VirtualMachine", "vm-uid")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(d.spec.priority_class_name.as_deref(), Some("gold"));
    let url = &d.spec.source.as_ref().unwrap().http.as_ref().unwrap().url;
    assert_eq!(url, "http://images/x.qcow2");
    // Made once: an existing one is not made again, whatever its state.
    let existing = [dv("web-root", "", json!([]))];
    assert!(missing(&v, &Storage::of(&existing, &[])).is_empty());
}

#[test]
fn readiness_follows_upstream_phases() {
    let v = vm();
    assert!(!templates_ready(&v, &Storage::default()));
    for (phase, ready) in [
        ("Pending", false),
        ("ImportScheduled", false),
        ("ImportInProgress", false),
        ("Failed", false),
        ("Succeeded", true),
        ("WaitForFirstConsumer", true),
        ("PendingPopulation", true),
    ] {
        let dvs = [dv("web-root", phase, json!([]))];
        assert_eq!(
            templates_ready(&v, &Storage::of(&dvs, &[])),
            ready,
            "{phase}"
        );
    }
}

#[test]
fn provisioning_and_errors_as_upstream() {
    let v = vm();
    let s = |dvs: &[DataVolume]| {
        (
            provisioning(&v, &Storage::of(dvs, &[])),
            data_volume_error(&v, &Storage::of(dvs, &[])),
        )
    };
    assert_eq!(s(&[]), (false, None));
    let provisions = |d: DataVolume| s(&[d]).0;
    assert!(provisions(dv("web-root", "ImportInProgress", json!([]))));
    assert!(!provisions(dv("web-root", "Succeeded", json!([]))));
    // Waiting unbound for a consumer is not provisioning; bound, it is.
    assert!(!provisions(dv(
        "web-root",
        "WaitForFirstConsumer",
        json!([])
    )));
    let bound = json!([{"type": "Bound", "status": "True"}]);
    assert!(provisions(dv("web-root", "WaitForFirstConsumer", bound)));
    let failed = s(&[dv("golden", "Failed", json!([]))]).1.unwrap();
    assert_eq!(failed, "DataVolume golden is in Failed phase");
    let stopped =
        json!([{"type": "Running", "status": "False", "reason": "Error", "message": "HTTP 404"}]);
    let e = s(&[dv("web-root", "ImportInProgress", stopped)]).1.unwrap();
    assert!(
        e.contains("web-root importer has stopped running due to an error: HTTP 404"),
        "{e}"
    );
}

#[test]
fn an_unbound_claim_is_seen_a_missing_one_is_not() {
    let v = vm();
    assert!(!unbound_claim(&v, &Storage::default()));
    let bound = [claim("web-data", "Bound"), claim("web-root", "Bound")];
    assert!(!unbound_claim(&v, &Storage::of(&[], &bound)));
    let pending = [claim("web-data", "Bound"), claim("web-root", "Pending")];
    assert!(unbound_claim(&v, &Storage::of(&[], &pending)));
}
