use super::*;
use serde_json::{Value, json};

const DRIVER: &str = "kubevirt-rs.io/local-volume";

fn vs(extra: Value) -> VolumeSnapshot {
    let mut v = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "snap", "namespace": "ns", "uid": "u1", "resourceVersion": "5"},
        "spec": {"source": {"persistentVolumeClaimName": "data"}}});
    json_patch::merge(&mut v, &extra);
    serde_json::from_value(v).unwrap()
}

fn class(name: &str, default: bool, policy: &str) -> VolumeSnapshotClass {
    let annotations = if default {
        json!({kubevirt_api::volumesnapshot::IS_DEFAULT_CLASS: "true"})
    } else {
        json!({})
    };
    serde_json::from_value(json!({"apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass", "metadata": {"name": name, "annotations": annotations},
        "driver": DRIVER, "deletionPolicy": policy}))
    .unwrap()
}

fn claim(bound: bool) -> PersistentVolumeClaim {
    let (volume, phase) = if bound {
        ("pvc-c1", "Bound")
    } else {
        ("", "Pending")
    };
    serde_json::from_value(
        json!({"metadata": {"name": "data", "namespace": "ns", "uid": "c1"},
        "spec": {"volumeName": volume}, "status": {"phase": phase}}),
    )
    .unwrap()
}

fn pv() -> PersistentVolume {
    serde_json::from_value(json!({"metadata": {"name": "pvc-c1",
        "annotations": {PROVISIONED_BY: DRIVER}},
        "spec": {"volumeMode": "Block", "local": {"path": "/r/pvc-c1"}}}))
    .unwrap()
}

fn content(extra: Value) -> VolumeSnapshotContent {
    let mut v = json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
        "metadata": {"name": "snapcontent-u1"},
        "spec": {"deletionPolicy": "Delete", "driver": DRIVER, "source": {"volumeHandle": "pvc-c1"},
            "volumeSnapshotRef": {"name": "snap", "namespace": "ns", "uid": "u1"}}});
    json_patch::merge(&mut v, &extra);
    serde_json::from_value(v).unwrap()
}

fn run(
    snapshots: &[VolumeSnapshot],
    contents: &[VolumeSnapshotContent],
    classes: &[VolumeSnapshotClass],
    claims: &[PersistentVolumeClaim],
) -> Vec<Action> {
    plan(&World {
        snapshots,
        contents,
        classes,
        claims,
        volumes: &[pv()],
    })
}

fn error_of(actions: &[Action]) -> String {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Error { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no error in {actions:?}"))
}

#[test]
fn a_dynamic_snapshot_gets_protected_and_its_content_from_the_class_and_pv() {
    let s = vs(json!({"spec": {"volumeSnapshotClassName": "local"}}));
    let actions = run(&[s], &[], &[class("local", true, "Retain")], &[claim(true)]);
    assert!(matches!(&actions[0], Action::Finalizers { finalizers, .. }
        if finalizers == &[SNAPSHOT_AS_SOURCE_PROTECTION.to_string()]));
    let Action::CreateContent(c) = &actions[1] else {
        panic!("{actions:?}")
    };
    assert_eq!(c.name_any(), "snapcontent-u1");
    assert_eq!(c.spec.driver, DRIVER);
    assert_eq!(c.spec.deletion_policy.as_str(), "Retain");
    assert_eq!(c.spec.source.volume_handle.as_deref(), Some("pvc-c1"));
    assert_eq!(c.spec.source_volume_mode.as_deref(), Some("Block"));
    assert_eq!(c.spec.volume_snapshot_ref.uid.as_deref(), Some("u1"));
}

#[test]
fn no_class_named_takes_the_drivers_single_default() {
    let actions = run(
        &[vs(json!({}))],
        &[],
        &[class("local", true, "Delete")],
        &[claim(true)],
    );
    assert!(actions.contains(&Action::SetClass {
        snapshot: SnapshotId {
            namespace: "ns".into(),
            name: "snap".into()
        },
        class: "local".into()
    }));
    let m = error_of(&run(
        &[vs(json!({}))],
        &[],
        &[class("other", false, "Delete")],
        &[claim(true)],
    ));
    assert!(m.contains("cannot find default snapshot class"), "{m}");
}

#[test]
fn a_missing_or_unbound_claim_is_an_error_in_upstreams_words() {
    let classes = [class("local", true, "Delete")];
    let m = error_of(&run(&[vs(json!({}))], &[], &classes, &[]));
    assert_eq!(
        m,
        "Failed to create snapshot content with error failed to get input parameters to create snapshot snap: \"failed to retrieve PVC data from the lister: persistentvolumeclaim \"data\" not found\""
    );
    let m = error_of(&run(&[vs(json!({}))], &[], &classes, &[claim(false)]));
    assert!(
        m.ends_with(
            "\"the PVC data is not yet bound to a PV, will not attempt to take a snapshot\""
        ),
        "{m}"
    );
    // Told once: the same error on the status is not written again.
    let told = vs(json!({"status": {"error": {"message": m}},
        "metadata": {"finalizers": [SNAPSHOT_AS_SOURCE_PROTECTION]}}));
    assert_eq!(run(&[told], &[], &classes, &[claim(false)]), vec![]);
}

#[test]
fn the_status_mirrors_the_content() {
    let c = content(
        json!({"status": {"readyToUse": true, "restoreSize": 1073741824,
        "creationTime": 1_796_472_000_123_456_789i64, "snapshotHandle": "snapcontent-u1"}}),
    );
    let actions = run(&[vs(json!({}))], &[c], &[], &[claim(true)]);
    let status = actions
        .iter()
        .find_map(|a| match a {
            Action::Status { status, .. } => Some(status.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        status.bound_volume_snapshot_content_name.as_deref(),
        Some("snapcontent-u1")
    );
    assert_eq!(status.ready_to_use, Some(true));
    assert_eq!(status.restore_size, Some(Quantity("1Gi".into())));
    assert_eq!(
        status.creation_time.unwrap().0.to_string(),
        "2026-12-05T12:00:00.123456789Z"
    );
}

#[test]
fn a_pre_provisioned_snapshot_binds_its_content_and_refuses_another_ones() {
    let s = vs(
        json!({"spec": {"source": {"persistentVolumeClaimName": null,
        "volumeSnapshotContentName": "imported"}}}),
    );
    let c = content(json!({"metadata": {"name": "imported"},
        "spec": {"source": {"volumeHandle": null, "snapshotHandle": "h"},
            "volumeSnapshotRef": {"uid": null}}}));
    let actions = run(std::slice::from_ref(&s), &[c], &[], &[]);
    assert!(actions.contains(&Action::BindContent {
        content: "imported".into(),
        uid: "u1".into()
    }));
    let theirs = content(json!({"metadata": {"name": "imported"},
        "spec": {"volumeSnapshotRef": {"name": "other"}}}));
    let m = error_of(&run(std::slice::from_ref(&s), &[theirs], &[], &[]));
    assert!(
        m.contains("is bound to a different snapshot (ns/other)"),
        "{m}"
    );
    assert_eq!(
        error_of(&run(&[s], &[], &[], &[])),
        "VolumeSnapshotContent imported is missing"
    );
}

#[test]
fn deleting_applies_the_policy_unless_a_claim_restores_from_it() {
    let deleted = vs(
        json!({"metadata": {"deletionTimestamp": "2026-12-05T12:00:00Z",
        "finalizers": [SNAPSHOT_AS_SOURCE_PROTECTION, SNAPSHOT_BOUND_PROTECTION, "other/keep"]},
        "status": {"boundVolumeSnapshotContentName": "snapcontent-u1"}}),
    );
    let unprotect = Action::Finalizers {
        snapshot: SnapshotId {
            namespace: "ns".into(),
            name: "snap".into(),
        },
        finalizers: vec!["other/keep".into()],
        version: Some("5".into()),
    };
    let delete = run(
        std::slice::from_ref(&deleted),
        &[content(json!({}))],
        &[],
        &[],
    );
    assert_eq!(
        delete,
        vec![
            Action::DeleteContent("snapcontent-u1".into()),
            unprotect.clone()
        ]
    );
    let retain = content(json!({"spec": {"deletionPolicy": "Retain"}}));
    assert_eq!(
        run(std::slice::from_ref(&deleted), &[retain], &[], &[]),
        vec![unprotect]
    );
    let restoring: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "restored", "namespace": "ns"},
        "spec": {"dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}},
        "status": {"phase": "Pending"}}))
    .unwrap();
    assert_eq!(
        run(&[deleted], &[content(json!({}))], &[], &[restoring]),
        vec![]
    );
}
