use super::*;
use crate::storage::plan::pv_for;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kubevirt_api::volumesnapshot::v1::{VolumeSnapshotContentSource, VolumeSnapshotContentSpec};
use std::path::PathBuf;

fn scope() -> Scope {
    Scope {
        node: "node-a".into(),
        root: PathBuf::from("/var/lib/kubevirt-rs/volumes"),
        immediate: false,
    }
}

/// Our PV `pvc-<uid>` of 1Gi on `node`, as the provisioner makes it.
fn pv(uid: &str, node: &str, mode: &str) -> PersistentVolume {
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data", "namespace": "default", "uid": uid},
        "spec": {"volumeMode": mode, "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}}}))
    .unwrap();
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "local"}, "provisioner": PROVISIONER}))
    .unwrap();
    let request = crate::storage::claim::request(&claim).unwrap();
    let scope = Scope {
        node: node.into(),
        ..scope()
    };
    pv_for(&scope, &claim, &class, &format!("pvc-{uid}"), &request)
}

fn content(
    name: &str,
    volume: Option<&str>,
    snapshot: Option<&str>,
    policy: &str,
) -> VolumeSnapshotContent {
    VolumeSnapshotContent::new(
        name,
        VolumeSnapshotContentSpec {
            volume_snapshot_ref: Default::default(),
            deletion_policy: DeletionPolicy::from(policy),
            driver: PROVISIONER.into(),
            volume_snapshot_class_name: None,
            source: VolumeSnapshotContentSource {
                volume_handle: volume.map(str::to_string),
                snapshot_handle: snapshot.map(str::to_string),
            },
            source_volume_mode: None,
        },
    )
}

fn meta() -> Meta {
    Meta {
        restore_size: 1 << 30,
        volume_mode: "Filesystem".into(),
        creation_time: 7,
        source: "pvc-1".into(),
    }
}

#[test]
fn a_new_delete_content_of_a_volume_here_is_protected_and_taken() {
    let c = content("snapcontent-1", Some("pvc-1"), None, "Delete");
    let actions = plan(
        &scope(),
        &[c],
        &[pv("1", "node-a", "Block")],
        &BTreeMap::new(),
    );
    assert_eq!(
        actions,
        vec![
            SnapshotAction::Protect {
                content: "snapcontent-1".into()
            },
            SnapshotAction::Take {
                content: "snapcontent-1".into(),
                volume: Volume {
                    name: "pvc-1".into(),
                    mode: VolumeMode::Block,
                    bytes: 1 << 30
                }
            }
        ]
    );
}

#[test]
fn other_nodes_and_other_drivers_are_left_alone() {
    let mut other_driver = content("c2", Some("pvc-1"), None, "Retain");
    other_driver.spec.driver = "hostpath.csi.k8s.io".into();
    let elsewhere = content("c1", Some("pvc-1"), None, "Retain");
    let actions = plan(
        &scope(),
        &[elsewhere, other_driver],
        &[pv("1", "node-b", "Filesystem")],
        &BTreeMap::new(),
    );
    assert_eq!(actions, vec![]);
}

#[test]
fn a_snapshot_on_disk_is_reported_once() {
    let on_disk = BTreeMap::from([("snapcontent-1".to_string(), meta())]);
    let mut c = content("snapcontent-1", Some("pvc-1"), None, "Retain");
    let actions = plan(
        &scope(),
        std::slice::from_ref(&c),
        &[pv("1", "node-a", "Filesystem")],
        &on_disk,
    );
    assert!(
        matches!(&actions[..], [SnapshotAction::Report { handle, .. }] if handle == "snapcontent-1"),
        "{actions:?}"
    );
    c.status = Some(
        kubevirt_api::volumesnapshot::v1::VolumeSnapshotContentStatus {
            snapshot_handle: Some("snapcontent-1".into()),
            ready_to_use: Some(true),
            restore_size: Some(1 << 30),
            ..Default::default()
        },
    );
    assert_eq!(
        plan(&scope(), &[c], &[pv("1", "node-a", "Filesystem")], &on_disk),
        vec![]
    );
}

#[test]
fn a_pre_provisioned_content_is_served_where_its_files_are() {
    let c = content("imported", None, Some("snapcontent-old"), "Retain");
    assert_eq!(
        plan(&scope(), std::slice::from_ref(&c), &[], &BTreeMap::new()),
        vec![]
    );
    let on_disk = BTreeMap::from([("snapcontent-old".to_string(), meta())]);
    let actions = plan(&scope(), &[c], &[], &on_disk);
    assert!(
        matches!(&actions[..], [SnapshotAction::Report { handle, .. }] if handle == "snapcontent-old"),
        "{actions:?}"
    );
}

#[test]
fn a_deleted_content_loses_its_files_only_with_delete() {
    let on_disk = BTreeMap::from([("snapcontent-1".to_string(), meta())]);
    let deleted = |policy: &str| {
        let mut c = content("snapcontent-1", Some("pvc-1"), None, policy);
        c.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        c.metadata.finalizers = Some(vec![CONTENT_BOUND_PROTECTION.into()]);
        c.status = Some(
            kubevirt_api::volumesnapshot::v1::VolumeSnapshotContentStatus {
                snapshot_handle: Some("snapcontent-1".into()),
                ..Default::default()
            },
        );
        c
    };
    // The volume is gone too: the node holding the snapshot still serves the content.
    assert_eq!(
        plan(&scope(), &[deleted("Delete")], &[], &on_disk),
        vec![SnapshotAction::Release {
            content: "snapcontent-1".into(),
            delete: Some("snapcontent-1".into())
        }]
    );
    assert_eq!(
        plan(&scope(), &[deleted("Retain")], &[], &on_disk),
        vec![SnapshotAction::Release {
            content: "snapcontent-1".into(),
            delete: None
        }]
    );
}

#[test]
fn a_volume_not_in_the_root_is_a_failure_on_the_content() {
    let mut v = pv("1", "node-a", "Filesystem");
    v.spec.as_mut().unwrap().local.as_mut().unwrap().path = "/etc".into();
    let c = content("c", Some("pvc-1"), None, "Retain");
    let actions = plan(&scope(), &[c], &[v], &BTreeMap::new());
    assert!(
        matches!(&actions[..], [SnapshotAction::Fail { message, .. }] if message.contains("is not a volume of")),
        "{actions:?}"
    );
}
