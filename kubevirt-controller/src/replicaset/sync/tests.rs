use serde_json::{Value, json};

use super::*;

fn now() -> Timestamp {
    "2026-11-28T12:00:00Z".parse().unwrap()
}

fn rs(spec: Value) -> VirtualMachineInstanceReplicaSet {
    let mut spec = spec;
    if spec.get("selector").is_none() {
        spec["selector"] = json!({"matchLabels": {"app": "web"}});
    }
    if spec.get("template").is_none() {
        spec["template"] =
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"domain": {"devices": {}}}});
    }
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "web", "namespace": "ns", "uid": "rs-uid"},
        "spec": spec,
    }))
    .unwrap()
}

/// A VMI named `name` with `labels`, owned by the set if `owned`, in `phase`.
fn vmi(name: &str, labels: Value, owned: bool, phase: &str) -> VirtualMachineInstance {
    let mut meta = json!({"name": name, "namespace": "ns", "uid": format!("{name}-uid"), "labels": labels,
        "creationTimestamp": "2026-11-28T11:00:00Z"});
    if owned {
        meta["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet",
            "name": "web", "uid": "rs-uid", "controller": true}]);
    }
    let ran = matches!(phase, "Running" | "Succeeded");
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": meta,
        "spec": {"domain": {"devices": {}}},
        "status": {"phase": phase,
            "phaseTransitionTimestamps": if ran { json!([{"phase": "Running"}]) } else { json!([]) },
            "conditions": [{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}]},
    }))
    .unwrap()
}

fn web() -> Value {
    json!({"app": "web"})
}

#[test]
fn scaling_up_creates_the_missing_and_counts_what_is_there() {
    let p = plan(
        &rs(json!({"replicas": 3})),
        &[vmi("a", web(), true, "Running")],
        now(),
    );
    assert_eq!((p.create, p.delete.len()), (2, 0));
    assert_eq!(p.status.replicas, Some(1));
    assert_eq!(p.status.ready_replicas, Some(1));
    assert_eq!(p.status.label_selector.as_deref(), Some("app=web"));
    // No replicas field: one.
    assert_eq!(plan(&rs(json!({})), &[], now()).create, 1);
    // Creates are bounded per sync.
    assert_eq!(
        plan(&rs(json!({"replicas": 1000})), &[], now()).create,
        BURST_REPLICAS
    );
}

#[test]
fn scaling_down_deletes_the_not_ready_first() {
    let vmis = [
        vmi("a", web(), true, "Running"),
        vmi("b", web(), true, "Pending"),
        vmi("c", web(), true, "Running"),
    ];
    let p = plan(&rs(json!({"replicas": 1})), &vmis, now());
    assert_eq!(p.create, 0);
    assert_eq!(p.delete.len(), 2);
    assert_eq!(p.delete[0], ("b".to_string(), "b-uid".to_string()));
}

#[test]
fn orphans_are_adopted_strays_released_and_others_left_alone() {
    let mut foreign = vmi("f", web(), false, "Running");
    foreign.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "kubevirt.io/v1".into(),
            kind: "VirtualMachine".into(),
            name: "f".into(),
            uid: "vm-uid".into(),
            controller: Some(true),
            block_owner_deletion: None,
        },
    ]);
    let vmis = [
        vmi("orphan", web(), false, "Running"),
        vmi("stray", json!({"app": "other"}), true, "Running"),
        vmi("unrelated", json!({"app": "other"}), false, "Running"),
        foreign,
    ];
    let p = plan(&rs(json!({"replicas": 1})), &vmis, now());
    assert_eq!(p.adopt, ["orphan"]);
    assert_eq!(p.release, ["stray"]);
    assert_eq!(
        (p.create, p.delete.len()),
        (0, 0),
        "the adopted orphan is the one replica"
    );
}

#[test]
fn finished_vmis_are_replaced_and_failed_starts_wait() {
    let done = [
        vmi("a", web(), true, "Succeeded"),
        vmi("b", web(), true, "Running"),
    ];
    let p = plan(&rs(json!({"replicas": 2})), &done, now());
    assert_eq!(p.delete, [("a".to_string(), "a-uid".to_string())]);
    assert_eq!(p.create, 1, "replaced in the same sync");
    assert!(!p.backoff);
    let failed = [vmi("a", web(), true, "Failed")];
    let p = plan(&rs(json!({"replicas": 1})), &failed, now());
    assert_eq!(p.delete.len(), 1);
    assert!(p.backoff);
    assert_eq!(
        p.create, 0,
        "a VMI that never ran is replaced after a pause"
    );
}

#[test]
fn paused_sets_do_nothing_and_say_so() {
    let p = plan(
        &rs(json!({"replicas": 3, "paused": true})),
        &[vmi("a", web(), true, "Failed")],
        now(),
    );
    assert_eq!((p.create, p.delete.len()), (0, 0));
    let c = &p.status.conditions.as_ref().unwrap()[0];
    assert_eq!(
        (c.type_.as_str(), c.status.as_str()),
        ("ReplicaPaused", "True")
    );
}

#[test]
fn a_selector_that_misses_its_template_is_ignored() {
    let p = plan(
        &rs(json!({"replicas": 2, "selector": {"matchLabels": {"app": "nope"}}})),
        &[],
        now(),
    );
    assert!(p.ignored.is_some());
    assert_eq!(p.create, 0);
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the VMIs, a sync never plans below zero or above the wanted count: active
        /// VMIs minus deletes plus creates is the replica count (within the burst), unless
        /// paused or backing off.
        #[test]
        fn a_sync_converges_on_the_replica_count(
            replicas in 0i32..20,
            phases in proptest::collection::vec(prop_oneof![Just("Pending"), Just("Running"), Just("Succeeded"), Just("Failed")], 0..30),
        ) {
            let vmis: Vec<_> = phases.iter().enumerate().map(|(i, ph)| vmi(&format!("v{i}"), web(), true, ph)).collect();
            let p = plan(&rs(json!({"replicas": replicas})), &vmis, now());
            let active = phases.iter().filter(|p| matches!(**p, "Pending" | "Running")).count() as i64;
            let finished = phases.len() as i64 - active;
            let deleted = p.delete.len() as i64;
            let after = active - (deleted - finished) + p.create as i64;
            if !p.backoff {
                prop_assert_eq!(after, i64::from(replicas));
            } else {
                prop_assert!(after <= i64::from(replicas).max(active));
            }
        }
    }
}
