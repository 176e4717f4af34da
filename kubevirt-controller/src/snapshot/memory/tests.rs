use super::*;
use crate::snapshot::content::build;
use crate::snapshot::restore::{restored_vm, volume_restores};
use crate::snapshot::testing::*;
use crate::snapshot::volumes::decide;
use kubevirt_api::snapshot::v1beta1::VirtualMachineRestore;
use serde_json::json;

fn snapshot(memory: bool) -> VirtualMachineSnapshot {
    let annotations = if memory {
        json!({MEMORY_OPT_IN: "true"})
    } else {
        json!({})
    };
    serde_json::from_value(json!({
        "metadata": {"name": "s1", "namespace": "ns", "uid": "snap-uid", "annotations": annotations},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm1"}}
    }))
    .expect("the snapshot decodes")
}

fn content(memory: bool) -> VirtualMachineSnapshotContent {
    let inclusion = decide(&vm(), &claims(), &storage_classes(), &snapshot_classes());
    build(&snapshot(memory), &vm(), &inclusion.included)
}

fn template() -> VirtualMachineInstanceSpec {
    vm().spec.template.spec.expect("a template")
}

/// The VM's instance as the API server stores it: defaulted.
fn running() -> VirtualMachineInstanceSpec {
    let mut spec = template();
    default_vmi_spec(&mut spec, "ns/vm1", &ClusterDefaults::kubevirt_rs());
    spec
}

fn with_state(mut c: VirtualMachineSnapshotContent) -> VirtualMachineSnapshotContent {
    let state = MemoryState {
        node: "node-a".into(),
        vmi_uid: "vmi-uid".into(),
        shape: shape_of(&running()),
    };
    c.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(MEMORY_STATE.into(), serde_json::to_string(&state).unwrap());
    c
}

fn restore() -> VirtualMachineRestore {
    serde_json::from_value(json!({
        "metadata": {"name": "r1", "namespace": "ns", "uid": "r-uid"},
        "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm1"},
                 "virtualMachineSnapshotName": "s1"}
    }))
    .expect("the restore decodes")
}

#[test]
fn a_template_and_its_defaulted_instance_have_one_shape() {
    let s = shape_of(&template());
    assert_eq!(s, shape_of(&running()));
    assert_eq!((s.vcpus, s.memory_bytes), (1, 128 << 20));
    assert_eq!(
        s.disks,
        [
            "root:disk:virtio",
            "data:disk:virtio",
            "boot:disk:virtio",
            "init:disk:virtio"
        ]
    );
    assert_eq!(s.boot, "firmware");
}

#[test]
fn the_memory_state_is_saved_only_when_asked_online_and_held_still() {
    let (t, r) = (template(), running());
    let c = content(true);
    let step = |s: &VirtualMachineSnapshot,
                c: &VirtualMachineSnapshotContent,
                vmi: Option<&VirtualMachineInstanceSpec>,
                paused: bool| step(s, c, Some(&t), vmi, paused);
    assert_eq!(step(&snapshot(true), &c, Some(&r), true), MemoryStep::Save);
    // Not asked for, offline, not yet paused, or already saved: nothing.
    assert_eq!(
        step(&snapshot(false), &c, Some(&r), true),
        MemoryStep::Nothing
    );
    assert_eq!(step(&snapshot(true), &c, None, true), MemoryStep::Nothing);
    assert_eq!(
        step(&snapshot(true), &c, Some(&r), false),
        MemoryStep::Nothing
    );
    assert_eq!(
        step(&snapshot(true), &with_state(content(true)), Some(&r), true),
        MemoryStep::Nothing
    );
}

#[test]
fn a_vm_edited_since_its_instance_started_fails_the_memory_part_naming_the_field() {
    let mut edited = template();
    edited.domain.memory.as_mut().unwrap().guest = Some(
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("256Mi".into()),
    );
    let got = step(
        &snapshot(true),
        &content(true),
        Some(&edited),
        Some(&running()),
        true,
    );
    let MemoryStep::Fail(why) = got else {
        panic!("not a failure: {got:?}")
    };
    assert!(
        why.contains("memory 134217728 bytes → 268435456 bytes"),
        "{why}"
    );
    assert!(why.contains("restart the VM"), "{why}");
}

#[test]
fn a_succeeded_snapshot_says_whether_it_holds_memory() {
    let done = || VirtualMachineSnapshotStatus {
        phase: Some(crate::snapshot::status::SUCCEEDED.into()),
        indications: Some(vec!["NoGuestAgent".into(), "Online".into()]),
        ..Default::default()
    };
    let mut st = done();
    indicate(&mut st, &snapshot(true), Some(&with_state(content(true))));
    assert_eq!(
        st.indications.as_deref().unwrap(),
        ["NoGuestAgent", "Online", MEMORY_INDICATION]
    );
    // Asked for offline: volumes only, said so; not failed.
    let mut st = VirtualMachineSnapshotStatus {
        indications: None,
        ..done()
    };
    indicate(&mut st, &snapshot(true), Some(&content(true)));
    assert_eq!(st.indications.as_deref().unwrap(), [NO_MEMORY_INDICATION]);
    assert_eq!(st.source_indications.as_ref().unwrap().len(), 1);
    // Not asked for: nothing of ours.
    let mut st = done();
    indicate(&mut st, &snapshot(false), Some(&content(false)));
    assert_eq!(st, done());
}

#[test]
fn a_restore_onto_its_vm_marks_it_to_resume_on_exactly_the_restored_claims() {
    let c = with_state(content(true));
    let r = restore();
    let restores = volume_restores(&r, &c).unwrap();
    let vm = restored_vm(&r, &c, &restores, Some(&vm())).unwrap();
    let resume = resume_check(&vm).unwrap().expect("a marker");
    assert_eq!(resume.node, "node-a");
    assert_eq!(resume.content, "vmsnapshot-content-snap-uid");
    assert_eq!(resume.claims["root"], "restore-r-uid-root");
    assert_eq!(resume.restore, "r1-r-uid");

    // Another VM (a new target) boots from its copies: no marker.
    let new = restored_vm(&r, &c, &restores, None).unwrap();
    assert_eq!(resume_check(&new), Ok(None));
    // A content without memory leaves no marker and removes an older one.
    let plain = restored_vm(&r, &content(false), &restores, Some(&vm)).unwrap();
    assert_eq!(resume_check(&plain), Ok(None));
}

#[test]
fn a_resume_is_refused_on_other_disks_or_another_machine() {
    let c = with_state(content(true));
    let r = restore();
    let restores = volume_restores(&r, &c).unwrap();
    let restored = restored_vm(&r, &c, &restores, Some(&vm())).unwrap();

    let mut other_disk = restored.clone();
    let volumes = other_disk
        .spec
        .template
        .spec
        .as_mut()
        .unwrap()
        .volumes
        .as_mut()
        .unwrap();
    volumes[0].data_volume.as_mut().unwrap().name = "someone-elses".into();
    let why = resume_check(&other_disk).unwrap_err();
    assert!(
        why.contains("volume \"root\" no longer uses claim"),
        "{why}"
    );
    assert!(
        why.contains(RESUME_ANNOTATION),
        "says how to boot instead: {why}"
    );

    let mut other_restore = restored.clone();
    other_restore
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(LAST_RESTORE_ANNOTATION.into(), "r2-other".into());
    let why = resume_check(&other_restore).unwrap_err();
    assert!(
        why.contains("disks come from restore \"r2-other\""),
        "{why}"
    );

    let mut bigger = restored.clone();
    bigger.spec.template.spec.as_mut().unwrap().domain.cpu =
        Some(serde_json::from_value(json!({"cores": 2})).unwrap());
    let why = resume_check(&bigger).unwrap_err();
    assert!(why.contains("vCPUs 1 → 2"), "{why}");

    let mut garbled = restored;
    garbled
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(RESUME_ANNOTATION.into(), "{not json".into());
    assert!(resume_check(&garbled).unwrap_err().contains("not readable"));
}

#[test]
fn the_instance_carries_the_marker_the_vm_may_resume() {
    let c = with_state(content(true));
    let r = restore();
    let restores = volume_restores(&r, &c).unwrap();
    let vm = restored_vm(&r, &c, &restores, Some(&vm())).unwrap();
    let vmi = crate::vm::instance::for_vm(&vm, false);
    let carried = vmi_resume(&vmi).expect("a marker").unwrap();
    assert_eq!(carried.content, "vmsnapshot-content-snap-uid");
    let selector = vmi
        .spec
        .node_selector
        .as_ref()
        .expect("steered to its node");
    assert_eq!(selector[crate::vm::instance::HOSTNAME_LABEL], "node-a");
    let plain = crate::vm::instance::for_vm(&super::super::testing::vm(), false);
    assert!(vmi_resume(&plain).is_none());
}
