//! `snapshot.storage.k8s.io/v1`: documents shaped as the external-snapshotter writes them survive
//! a strict decode and an encode with no field lost, and the generated CRDs accept them.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubevirt_api::codec::{decode, documents_from_yaml, encode, lost_fields};
use kubevirt_api::volumesnapshot::v1::{
    DeletionPolicy, VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent,
    VolumeSnapshotContentStatus, VolumeSnapshotError, VolumeSnapshotStatus,
};
use kubevirt_api::volumesnapshot::{IS_DEFAULT_CLASS, volume_snapshot_crds};
use proptest::prelude::*;
use serde_json::Value;

/// Every field upstream's v1 types define, set.
const DOCUMENTS: &str = r#"
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: rootdisk-snap
  namespace: default
  finalizers:
  - snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection
  - snapshot.storage.kubernetes.io/volumesnapshot-bound-protection
spec:
  volumeSnapshotClassName: local
  source:
    persistentVolumeClaimName: rootdisk
status:
  boundVolumeSnapshotContentName: snapcontent-0b6e2c5e-7a10-4a59-9f8c-5d8e0e1a2b3c
  creationTime: "2026-12-05T12:00:00Z"
  readyToUse: true
  restoreSize: 1Gi
  error:
    time: "2026-12-05T11:59:00Z"
    message: "Failed to create snapshot: the claim is not bound"
  volumeGroupSnapshotName: group-1
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: imported
  namespace: default
spec:
  source:
    volumeSnapshotContentName: pre-provisioned
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotContent
metadata:
  name: snapcontent-0b6e2c5e-7a10-4a59-9f8c-5d8e0e1a2b3c
spec:
  deletionPolicy: Delete
  driver: kubevirt-rs.io/local-volume
  source:
    volumeHandle: pvc-1234
  sourceVolumeMode: Block
  volumeSnapshotClassName: local
  volumeSnapshotRef:
    apiVersion: snapshot.storage.k8s.io/v1
    kind: VolumeSnapshot
    name: rootdisk-snap
    namespace: default
    resourceVersion: "42"
    uid: 0b6e2c5e-7a10-4a59-9f8c-5d8e0e1a2b3c
status:
  creationTime: 1796472000123456789
  readyToUse: true
  restoreSize: 1073741824
  snapshotHandle: snapshot-pvc-1234
  error:
    time: "2026-12-05T11:59:00Z"
    message: "copy failed"
  volumeGroupSnapshotHandle: group-handle
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotContent
metadata:
  name: pre-provisioned
spec:
  deletionPolicy: Retain
  driver: kubevirt-rs.io/local-volume
  source:
    snapshotHandle: pvc-5678-at-noon
  volumeSnapshotRef:
    name: imported
    namespace: default
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata:
  name: local
  annotations:
    snapshot.storage.kubernetes.io/is-default-class: "true"
driver: kubevirt-rs.io/local-volume
deletionPolicy: Delete
parameters:
  csi.storage.k8s.io/snapshotter-secret-name: none
"#;

fn round_trip(value: &Value) -> Value {
    match value["kind"].as_str() {
        Some("VolumeSnapshot") => encode(&decode::<VolumeSnapshot>(value).unwrap()),
        Some("VolumeSnapshotContent") => encode(&decode::<VolumeSnapshotContent>(value).unwrap()),
        Some("VolumeSnapshotClass") => encode(&decode::<VolumeSnapshotClass>(value).unwrap()),
        other => panic!("unexpected kind {other:?}"),
    }
    .unwrap()
}

#[test]
fn upstream_shaped_documents_round_trip_with_no_field_lost() {
    let docs = documents_from_yaml(DOCUMENTS).unwrap();
    assert_eq!(docs.len(), 5);
    for doc in &docs {
        let back = round_trip(&doc.value);
        assert_eq!(lost_fields(&doc.value, &back), vec![], "{}", doc.value);
        assert_eq!(back, doc.value);
    }
}

#[test]
fn typed_fields_read_as_upstream_names_them() {
    let docs = documents_from_yaml(DOCUMENTS).unwrap();
    let vs: VolumeSnapshot = decode(&docs[0].value).unwrap();
    assert!(vs.is_ready());
    let status = vs.status.as_ref().unwrap();
    assert_eq!(status.restore_size, Some(Quantity("1Gi".into())));
    assert_eq!(
        status.bound_volume_snapshot_content_name.as_deref(),
        Some("snapcontent-0b6e2c5e-7a10-4a59-9f8c-5d8e0e1a2b3c")
    );
    let content: VolumeSnapshotContent = decode(&docs[2].value).unwrap();
    assert_eq!(content.spec.deletion_policy, DeletionPolicy::Delete);
    assert_eq!(content.spec.source_volume_mode.as_deref(), Some("Block"));
    assert_eq!(content.snapshot_handle(), Some("snapshot-pvc-1234"));
    let pre: VolumeSnapshotContent = decode(&docs[3].value).unwrap();
    assert_eq!(pre.snapshot_handle(), Some("pvc-5678-at-noon"));
    let class: VolumeSnapshotClass = decode(&docs[4].value).unwrap();
    assert!(class.is_default());
    assert_eq!(class.spec.driver, "kubevirt-rs.io/local-volume");
    assert!(
        class
            .metadata
            .annotations
            .unwrap()
            .contains_key(IS_DEFAULT_CLASS)
    );
}

#[test]
fn unknown_fields_are_errors_with_their_path() {
    let mut doc = documents_from_yaml(DOCUMENTS).unwrap().remove(2).value;
    doc["spec"]["source"]["volumeHandel"] = Value::String("typo".into());
    let err = decode::<VolumeSnapshotContent>(&doc)
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.source"), "{err}");
}

#[test]
fn a_policy_upstream_does_not_define_is_kept() {
    let mut doc = documents_from_yaml(DOCUMENTS).unwrap().remove(4).value;
    doc["deletionPolicy"] = Value::String("Archive".into());
    let class: VolumeSnapshotClass = decode(&doc).unwrap();
    assert_eq!(
        class.spec.deletion_policy,
        DeletionPolicy::Other("Archive".into())
    );
    assert_eq!(encode(&class).unwrap(), doc);
}

#[test]
fn the_crds_accept_every_document_and_reject_a_wrong_policy() {
    let crds = volume_snapshot_crds();
    let docs = documents_from_yaml(DOCUMENTS).unwrap();
    for doc in &docs {
        let kind = doc.value["kind"].as_str().unwrap();
        let crd = crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
        let schema = crd.spec.versions[0]
            .schema
            .clone()
            .unwrap()
            .open_api_v3_schema
            .unwrap();
        let mut schema = serde_json::to_value(schema).unwrap();
        strip_kubernetes_keywords(&mut schema);
        let validator = jsonschema::draft4::new(&schema).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc.value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{kind}: {errors:?}");
        if kind == "VolumeSnapshotClass" {
            let mut bad = doc.value.clone();
            bad["deletionPolicy"] = Value::String("Archive".into());
            assert!(!validator.is_valid(&bad));
        }
    }
}

/// JSON Schema draft 4 knows neither `nullable` nor the `x-kubernetes-*` keywords.
fn strip_kubernetes_keywords(node: &mut Value) {
    match node {
        Value::Object(map) => {
            let nullable = map.remove("nullable") == Some(Value::Bool(true));
            if map.remove("x-kubernetes-int-or-string") == Some(Value::Bool(true)) {
                map.remove("anyOf");
                map.insert("type".into(), serde_json::json!(["integer", "string"]));
            }
            map.retain(|k, _| !k.starts_with("x-kubernetes"));
            if nullable && let Some(Value::String(t)) = map.get("type").cloned() {
                map.insert("type".into(), serde_json::json!([t, "null"]));
            }
            map.values_mut().for_each(strip_kubernetes_keywords);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_kubernetes_keywords),
        _ => {}
    }
}

fn opt_string() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "[a-z][a-z0-9-]{0,20}",
        Just("yes".to_string()),
        Just("null".to_string()),
        Just("1e3".to_string()),
        "\\PC{0,12}",
    ])
}

prop_compose! {
    fn arb_content()(
        name in "[a-z][a-z0-9-]{0,30}",
        policy in prop_oneof![Just("Delete".to_string()), Just("Retain".to_string()), "[A-Za-z]{1,8}"],
        volume_handle in opt_string(),
        snapshot_handle in opt_string(),
        class in opt_string(),
        mode in opt_string(),
        status in prop::option::of((opt_string(), prop::option::of(any::<i64>()),
            prop::option::of(0i64..i64::MAX), prop::option::of(any::<bool>()), opt_string())),
    ) -> VolumeSnapshotContent {
        let mut c = VolumeSnapshotContent::new(&name, kubevirt_api::volumesnapshot::v1::VolumeSnapshotContentSpec {
            volume_snapshot_ref: Default::default(),
            deletion_policy: DeletionPolicy::from(policy),
            driver: "kubevirt-rs.io/local-volume".into(),
            volume_snapshot_class_name: class,
            source: kubevirt_api::volumesnapshot::v1::VolumeSnapshotContentSource { volume_handle, snapshot_handle },
            source_volume_mode: mode,
        });
        c.status = status.map(|(handle, creation_time, restore_size, ready_to_use, message)| VolumeSnapshotContentStatus {
            snapshot_handle: handle,
            creation_time,
            restore_size,
            ready_to_use,
            error: message.map(|m| VolumeSnapshotError { message: Some(m), time: None }),
            volume_group_snapshot_handle: None,
        });
        c
    }
}

proptest! {
    #[test]
    fn any_content_survives_json_and_yaml(content in arb_content()) {
        let json = encode(&content).unwrap();
        prop_assert_eq!(&decode::<VolumeSnapshotContent>(&json).unwrap(), &content);
        let yaml = kubevirt_api::codec::to_yaml(&content).unwrap();
        let back = &documents_from_yaml(&yaml).unwrap()[0].value;
        prop_assert_eq!(decode::<VolumeSnapshotContent>(back).unwrap(), content);
    }

    #[test]
    fn any_snapshot_status_survives_json(
        bound in opt_string(), ready in prop::option::of(any::<bool>()),
        size in prop::option::of((1u32..100_000).prop_map(|m| Quantity(format!("{m}Mi")))),
        group in opt_string(),
    ) {
        let mut vs = VolumeSnapshot::of_claim("s", "c");
        vs.status = Some(VolumeSnapshotStatus {
            bound_volume_snapshot_content_name: bound,
            ready_to_use: ready,
            restore_size: size,
            volume_group_snapshot_name: group,
            ..Default::default()
        });
        let json = encode(&vs).unwrap();
        prop_assert_eq!(decode::<VolumeSnapshot>(&json).unwrap(), vs);
    }
}
