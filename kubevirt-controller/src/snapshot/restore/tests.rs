use super::*;
use crate::snapshot::content::build;
use crate::snapshot::testing::*;
use crate::snapshot::volumes::decide;
use kubevirt_api::snapshot::v1beta1::VirtualMachineSnapshot;

fn content() -> VirtualMachineSnapshotContent {
    let snapshot: VirtualMachineSnapshot = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s1", "namespace": "ns", "uid": "snap-uid"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm1"}}
    }))
    .expect("the snapshot decodes");
    let inclusion = decide(&vm(), &claims(), &storage_classes(), &snapshot_classes());
    build(&snapshot, &vm(), &inclusion.included)
}

fn restore(target: &str) -> VirtualMachineRestore {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "r1", "namespace": "ns", "uid": "r-uid"},
        "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target},
                 "virtualMachineSnapshotName": "s1"}
    }))
    .expect("the restore decodes")
}

#[test]
fn every_backed_up_volume_gets_a_randomized_claim() {
    let r = volume_restores(&restore("vm1"), &content()).expect("restores");
    assert_eq!(
        r,
        [
            VolumeRestore {
                volume_name: "root".into(),
                persistent_volume_claim: "restore-r-uid-root".into(),
                volume_snapshot_name: "vmsnapshot-snap-uid-volume-root".into(),
                data_volume_name: Some("restore-r-uid-root".into()),
            },
            VolumeRestore {
                volume_name: "data".into(),
                persistent_volume_claim: "restore-r-uid-data".into(),
                volume_snapshot_name: "vmsnapshot-snap-uid-volume-data".into(),
                data_volume_name: None,
            }
        ]
    );
    let mut again = restore("vm1");
    let mut kept = r.clone();
    kept[0].persistent_volume_claim = "earlier".into();
    again.status = Some(
        kubevirt_api::snapshot::v1beta1::VirtualMachineRestoreStatus {
            restores: Some(kept.clone()),
            ..Default::default()
        },
    );
    assert_eq!(volume_restores(&again, &content()).expect("restores"), kept);
}

#[test]
fn a_restored_claim_comes_from_its_volume_snapshot() {
    let c = content();
    let r = volume_restores(&restore("vm1"), &c).expect("restores");
    let backup = &c.spec.volume_backups.as_ref().expect("backups")[1];
    let claim = restore_claim(&restore("vm1"), backup, &r[1], ("vm1", "ns"));
    assert_eq!(claim.metadata.name.as_deref(), Some("restore-r-uid-data"));
    assert_eq!(claim.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(claim.metadata.owner_references, None);
    let spec = claim.spec.as_ref().expect("spec");
    assert_eq!(spec.volume_name, None, "not bound to the original's volume");
    assert_eq!(spec.storage_class_name.as_deref(), Some("local"));
    let source = spec.data_source.as_ref().expect("a data source");
    assert_eq!(
        (
            source.api_group.as_deref(),
            source.kind.as_str(),
            source.name.as_str()
        ),
        (
            Some("snapshot.storage.k8s.io"),
            "VolumeSnapshot",
            "vmsnapshot-snap-uid-volume-data"
        )
    );
    let annotations = claim.metadata.annotations.as_ref().expect("annotations");
    assert_eq!(annotations.get("keep").map(String::as_str), Some("me"));
    assert!(!annotations.contains_key("pv.kubernetes.io/bind-completed"));
    assert_eq!(annotations[RESTORE_NAME_ANNOTATION], "r1");
    let labels = claim.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels[RESTORE_SOURCE_NAME_LABEL], "vm1");
}

#[test]
fn the_same_vm_gets_the_snapshot_spec_on_the_restored_claims_and_stays_stopped() {
    let c = content();
    let r = volume_restores(&restore("vm1"), &c).expect("restores");
    let mut target = vm();
    target.spec.run_strategy = Some("Halted".into());
    // Changed since the snapshot: a new disk and a different template.
    target.spec.template.spec.as_mut().expect("spec").volumes = None;
    target.status = Some(Default::default());
    let new = restored_vm(&restore("vm1"), &c, &r, Some(&target)).expect("the VM");
    assert_eq!(new.spec.run_strategy.as_deref(), Some("Halted"));
    assert_eq!(
        new.metadata.uid.as_deref(),
        Some("vm-uid"),
        "the same object"
    );
    assert_eq!(new.status, None);
    let volumes = new
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone());
    let volumes = volumes.expect("volumes");
    assert_eq!(
        volumes[0].data_volume.as_ref().map(|d| d.name.as_str()),
        Some("restore-r-uid-root")
    );
    assert_eq!(
        volumes[1]
            .persistent_volume_claim
            .as_ref()
            .map(|p| p.claim_name.as_str()),
        Some("restore-r-uid-data")
    );
    assert!(
        volumes[2].container_disk.is_some(),
        "kept as in the snapshot"
    );
    let templates = new.spec.data_volume_templates.as_ref().expect("templates");
    assert_eq!(
        templates[0]
            .metadata
            .as_ref()
            .and_then(|m| m.name.as_deref()),
        Some("restore-r-uid-root")
    );
    assert!(applied(&restore("vm1"), &new));
    assert!(!applied(&restore("vm1"), &target));
    assert_eq!(deleted_data_volumes(&target, &new), ["vm1-root"]);
}

#[test]
fn a_new_vm_takes_the_target_name_and_the_snapshot_metadata() {
    let c = content();
    let r = volume_restores(&restore("vm2"), &c).expect("restores");
    let new = restored_vm(&restore("vm2"), &c, &r, None).expect("the VM");
    assert_eq!(new.metadata.name.as_deref(), Some("vm2"));
    assert_eq!(new.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(new.metadata.uid, None);
    assert_eq!(
        new.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app"))
            .map(String::as_str),
        Some("demo")
    );
    assert_eq!(
        new.metadata.annotations.as_ref().expect("annotations")[LAST_RESTORE_ANNOTATION],
        "r1-r-uid"
    );
    assert_eq!(
        new.spec.run_strategy.as_deref(),
        Some("Always"),
        "the snapshot's"
    );
}

#[test]
fn a_data_volume_without_template_becomes_a_claim_volume() {
    let mut c = content();
    if let Some(vm) = c
        .spec
        .source
        .virtual_machine
        .as_mut()
        .and_then(|v| v.spec.as_mut())
    {
        vm.data_volume_templates = None;
    }
    let r = volume_restores(&restore("vm2"), &c).expect("restores");
    assert_eq!(r[0].data_volume_name, None);
    let new = restored_vm(&restore("vm2"), &c, &r, None).expect("the VM");
    let v = &new
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .expect("volumes")[0];
    assert_eq!(v.data_volume, None);
    assert_eq!(
        v.persistent_volume_claim
            .as_ref()
            .map(|p| p.claim_name.as_str()),
        Some("restore-r-uid-root")
    );
}

fn restore_with(target: &str, extra: serde_json::Value) -> VirtualMachineRestore {
    let mut r = serde_json::to_value(restore(target)).expect("encodes");
    for (k, v) in extra.as_object().expect("an object") {
        r["spec"][k] = v.clone();
    }
    serde_json::from_value(r).expect("the restore decodes")
}

#[test]
fn claim_names_follow_the_policy_and_the_overrides() {
    let names = |r: &VirtualMachineRestore| -> Vec<String> {
        volume_restores(r, &content())
            .expect("restores")
            .into_iter()
            .map(|v| v.persistent_volume_claim)
            .collect()
    };
    let prefixed = restore_with(
        "vm2",
        serde_json::json!({"volumeRestorePolicy": "PrefixTargetName"}),
    );
    assert_eq!(names(&prefixed), ["vm2-root", "vm2-data"]);
    let overridden = restore_with(
        "vm2",
        serde_json::json!({"volumeRestorePolicy": "PrefixTargetName",
            "volumeRestoreOverrides": [{"volumeName": "data", "restoreName": "my-data",
                                        "labels": {"tier": "gold"}, "annotations": {"note": "kept"}}]}),
    );
    assert_eq!(names(&overridden), ["vm2-root", "my-data"]);
    let in_place = restore_with("vm1", serde_json::json!({"volumeRestorePolicy": "InPlace"}));
    assert_eq!(
        volume_restores(&in_place, &content()),
        Err(RestoreError::InPlace)
    );

    // The override's labels and annotations reach the restored claim.
    let c = content();
    let r = volume_restores(&overridden, &c).expect("restores");
    let backup = c
        .spec
        .volume_backups
        .iter()
        .flatten()
        .find(|b| b.volume_name == "data")
        .expect("a backup");
    let claim = restore_claim(&overridden, backup, &r[1], ("vm1", "ns"));
    let meta = &claim.metadata;
    assert_eq!(meta.name.as_deref(), Some("my-data"));
    assert_eq!(meta.labels.as_ref().expect("labels")["tier"], "gold");
    assert_eq!(
        meta.annotations.as_ref().expect("annotations")["note"],
        "kept"
    );
}

#[test]
fn a_new_vm_gets_the_patches_and_a_bad_patch_is_named() {
    let c = content();
    let patched = restore_with(
        "vm2",
        serde_json::json!({"patches": [
            r#"{"op": "replace", "path": "/spec/runStrategy", "value": "Halted"}"#,
            r#"{"op": "add", "path": "/metadata/labels/restored", "value": "yes"}"#
        ]}),
    );
    let r = volume_restores(&patched, &c).expect("restores");
    let vm = restored_vm(&patched, &c, &r, None).expect("the VM");
    assert_eq!(vm.spec.run_strategy.as_deref(), Some("Halted"));
    assert_eq!(
        vm.metadata.labels.as_ref().expect("labels")["restored"],
        "yes"
    );

    let broken = restore_with(
        "vm2",
        serde_json::json!({"patches": [r#"{"op": "remove", "path": "/spec/nothing/here"}"#]}),
    );
    let err = restored_vm(&broken, &c, &r, None).expect_err("the patch does not apply");
    assert!(
        err.to_string()
            .starts_with("spec.patches[0] does not apply"),
        "{err}"
    );
}
