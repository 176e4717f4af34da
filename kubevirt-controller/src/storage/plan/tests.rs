use super::*;
use crate::storage::claim::VolumeMode;
use crate::storage::loopdev::LoopDevice;
use proptest::prelude::*;
use serde_json::{Value, json};

const NODE: &str = "node-a";
const ROOT: &str = "/var/lib/kubevirt-rs/volumes";
const UID: &str = "0b1c2d3e-0000-4000-8000-000000000001";

fn scope(immediate: bool) -> Scope {
    Scope {
        node: NODE.into(),
        root: ROOT.into(),
        immediate,
    }
}

fn class(name: &str, extra: Value) -> StorageClass {
    let mut v = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name}, "provisioner": PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer"});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    if let (Value::Object(b), Value::Object(e)) = (base, extra) {
        for (k, v) in e {
            match (b.get_mut(&k), v) {
                (Some(old @ Value::Object(_)), v @ Value::Object(_)) => merge(old, v),
                (_, v) => {
                    b.insert(k, v);
                }
            }
        }
    }
}

/// A claim of class `local` handed to us, selected for this node, unless `extra` says otherwise.
fn claim(extra: Value) -> PersistentVolumeClaim {
    let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "ns", "uid": UID, "annotations": {
            STORAGE_PROVISIONER: PROVISIONER, SELECTED_NODE: NODE}},
        "spec": {"storageClassName": "local", "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

/// Our PV of the claim, bound, with `extra`.
fn pv(extra: Value) -> PersistentVolume {
    let name = format!("pvc-{UID}");
    let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "uid": "pv-uid", "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "local": {"path": format!("{ROOT}/{name}")}, "volumeMode": "Filesystem",
            "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local",
            "claimRef": {"namespace": "ns", "name": "data", "uid": UID},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [NODE]}]}]}}},
        "status": {"phase": "Bound"}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn bound(extra: Value) -> PersistentVolumeClaim {
    let mut c = json!({"spec": {"volumeName": format!("pvc-{UID}")},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
    merge(&mut c, extra);
    claim(c)
}

fn disk() -> Disk {
    Disk {
        free_bytes: 50 << 30,
        ..Disk::default()
    }
}

fn run(
    scope: &Scope,
    claims: &[PersistentVolumeClaim],
    volumes: &[PersistentVolume],
) -> Vec<Action> {
    run_on(scope, claims, volumes, &disk())
}

fn run_on(
    scope: &Scope,
    claims: &[PersistentVolumeClaim],
    volumes: &[PersistentVolume],
    disk: &Disk,
) -> Vec<Action> {
    let classes = [
        class("local", json!({"allowVolumeExpansion": true})),
        class("now", json!({"volumeBindingMode": "Immediate"})),
        class("fixed", json!({"reclaimPolicy": "Retain"})),
        class("theirs", json!({"provisioner": "example.com/nfs"})),
    ];
    plan(
        scope,
        Observed {
            claims,
            volumes,
            classes: &classes,
            disk,
            snapshots: &[],
            contents: &[],
        },
    )
}

fn refusal(actions: &[Action]) -> String {
    match actions {
        [Action::Refuse { message, .. }] => message.clone(),
        other => panic!("expected one refusal, got {other:?}"),
    }
}

#[test]
fn a_claim_selected_here_gets_a_volume_and_the_contracts_pv() {
    let actions = run(&scope(false), &[claim(json!({}))], &[]);
    let [
        Action::Provision {
            claim: who,
            volume,
            pv,
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}");
    };
    let name = format!("pvc-{UID}");
    assert_eq!(who.name.as_deref(), Some("data"));
    assert_eq!(
        volume,
        &Volume {
            name: name.clone(),
            mode: VolumeMode::Filesystem,
            bytes: 1 << 30
        }
    );
    assert_eq!(
        serde_json::to_value(pv).unwrap(),
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "1Gi"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": "ns", "name": "data", "uid": UID},
                "local": {"path": format!("{ROOT}/{name}")},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE]}]}]}},
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "local",
                "volumeMode": "Filesystem",
            }
        })
    );
    // Block, and the class's reclaim policy.
    let block = claim(json!({"spec": {"volumeMode": "Block", "storageClassName": "fixed"}}));
    let actions = run(&scope(false), &[block], &[]);
    let [Action::Provision { volume, pv, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(volume.mode, VolumeMode::Block);
    let spec = pv.spec.clone().unwrap();
    assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
}

#[test]
fn claims_that_are_not_this_nodes_are_left_alone() {
    let s = scope(true);
    let annotations = |a: Value| json!({"metadata": {"annotations": a}});
    for (why, c) in [
        (
            "another node",
            claim(annotations(json!({SELECTED_NODE: "node-b"}))),
        ),
        (
            "not handed to us",
            claim(annotations(json!({STORAGE_PROVISIONER: "example.com/nfs"}))),
        ),
        ("bound", claim(json!({"spec": {"volumeName": "elsewhere"}}))),
        (
            "deleting",
            claim(json!({"metadata": {"deletionTimestamp": "2026-12-05T10:00:00Z"}})),
        ),
        (
            "another provisioner's class",
            claim(json!({"spec": {"storageClassName": "theirs"}})),
        ),
        ("no uid", {
            let mut c = claim(json!({}));
            c.metadata.uid = None;
            c
        }),
    ] {
        assert_eq!(run(&s, &[c], &[]), vec![], "{why}");
    }
    // Its PV exists (an earlier pass made it; the binder has not bound it yet).
    let made = pv(json!({"spec": {"claimRef": {"uid": UID}}, "status": {"phase": "Available"}}));
    assert_eq!(run(&s, &[claim(json!({}))], &[made]), vec![]);
}

#[test]
fn claims_without_a_node_are_an_immediate_instances_and_only_of_immediate_classes() {
    let mut c = claim(json!({"spec": {"storageClassName": "now"}}));
    c.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(SELECTED_NODE);
    assert!(matches!(
        run(&scope(true), std::slice::from_ref(&c), &[])[..],
        [Action::Provision { .. }]
    ));
    assert_eq!(run(&scope(false), std::slice::from_ref(&c), &[]), vec![]);
    // WaitForFirstConsumer waits for the scheduler's choice.
    c.spec.as_mut().unwrap().storage_class_name = Some("local".into());
    assert_eq!(run(&scope(true), &[c], &[]), vec![]);
}

#[test]
fn bad_claims_are_told_which_field_and_get_nothing() {
    let s = scope(false);
    let r = |c| refusal(&run(&s, &[c], &[]));
    assert!(
        r(claim(json!({"spec": {"resources": {"requests": null}}})))
            .starts_with("spec.resources.requests.storage: the claim asks for no size")
    );
    assert!(
        r(claim(json!({"spec": {"accessModes": ["ReadWriteMany"]}})))
            .starts_with("spec.accessModes: ReadWriteMany")
    );
    assert!(r(claim(json!({"spec": {"volumeMode": "Object"}}))).starts_with("spec.volumeMode"));
    assert_eq!(
        r(claim(json!({"spec": {"storageClassName": "gone"}}))),
        "spec.storageClassName: the StorageClass \"gone\" does not exist"
    );
    match &run(&s, &[claim(json!({"spec": {"volumeMode": "Object"}}))], &[])[0] {
        Action::Refuse { reason, claim, .. } => {
            assert_eq!(*reason, PROVISIONING_FAILED);
            assert_eq!(claim.uid.as_deref(), Some(UID));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn clones_are_refused_and_populators_claims_left_to_them() {
    let s = scope(false);
    let clone =
        claim(json!({"spec": {"dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}}));
    assert!(refusal(&run(&s, &[clone], &[])).starts_with(
        "spec.dataSource: a PersistentVolumeClaim source is not supported by kubevirt-rs.io/local-volume"
    ));
    let snapshot = claim(
        json!({"spec": {"dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io",
        "kind": "VolumeSnapshot", "name": "snap"}}}),
    );
    assert_eq!(
        refusal(&run(&s, &[snapshot], &[])),
        "spec.dataSource: the VolumeSnapshot ns/snap does not exist"
    );
    let elsewhere = claim(
        json!({"spec": {"dataSourceRef": {"apiGroup": "snapshot.storage.k8s.io",
        "kind": "VolumeSnapshot", "name": "snap", "namespace": "other"}}}),
    );
    assert!(refusal(&run(&s, &[elsewhere], &[])).contains("a VolumeSnapshot source"));
    let populated = claim(
        json!({"spec": {"dataSourceRef": {"apiGroup": "cdi.kubevirt.io",
        "kind": "VolumeImportSource", "name": "src"}}}),
    );
    assert_eq!(run(&s, &[populated], &[]), vec![]);
}

#[test]
fn a_claim_larger_than_the_free_space_is_refused_naming_both_sizes() {
    let small = Disk {
        free_bytes: 512 << 20,
        ..Disk::default()
    };
    let c = claim(json!({"spec": {"volumeMode": "Block"}}));
    let m = refusal(&run_on(
        &scope(false),
        std::slice::from_ref(&c),
        &[],
        &small,
    ));
    assert_eq!(
        m,
        format!(
            "spec.resources.requests.storage: 1Gi (1Gi) is more than the 512Mi free in {ROOT} on node {NODE}"
        )
    );
    // A volume already made (a pass that stopped before its PV) is finished regardless.
    let mut made = small.clone();
    made.present.insert(format!("pvc-{UID}"));
    assert!(matches!(
        run_on(&scope(false), &[c], &[], &made)[..],
        [Action::Provision { .. }]
    ));
}

#[test]
fn released_volumes_with_delete_are_reclaimed_and_others_kept() {
    let s = scope(false);
    let released = |extra: Value| {
        let mut p = pv(json!({"status": {"phase": "Released"}}));
        let mut v = serde_json::to_value(&p).unwrap();
        merge(&mut v, extra);
        p = serde_json::from_value(v).unwrap();
        p
    };
    assert_eq!(
        run(&s, &[], &[released(json!({}))]),
        vec![Action::Reclaim {
            pv: format!("pvc-{UID}"),
            uid: "pv-uid".into()
        }]
    );
    for (why, v) in [
        (
            "Retain",
            released(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
        ),
        ("Bound", pv(json!({}))),
        (
            "another node's",
            released(
                json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": HOSTNAME_LABEL, "operator": "In", "values": ["node-b"]}]}]}}}}),
            ),
        ),
        (
            "not ours",
            released(json!({"metadata": {"annotations": {PROVISIONED_BY: "example.com/nfs"}}})),
        ),
        (
            "a path outside the root",
            released(json!({"spec": {"local": {"path": "/etc"}}})),
        ),
    ] {
        assert_eq!(run(&s, &[], &[v]), vec![], "{why}");
    }
}

fn lo(n: u32, name: &str, deleted: bool) -> (String, LoopDevice) {
    (
        name.to_string(),
        LoopDevice {
            device: format!("/dev/loop{n}").into(),
            backing: format!("{ROOT}/{name}.img").into(),
            deleted,
        },
    )
}

#[test]
fn block_volumes_get_one_linked_loop_device_and_strays_are_detached() {
    let s = scope(false);
    let name = format!("pvc-{UID}");
    let block = pv(json!({"spec": {"volumeMode": "Block"}}));
    let mut d = disk();
    d.present.insert(name.clone());
    // After a reboot: no device, or the link names a device of something else.
    let attach = vec![Action::Attach {
        volume: name.clone(),
    }];
    assert_eq!(run_on(&s, &[], std::slice::from_ref(&block), &d), attach);
    d.links.insert(name.clone(), "/dev/loop5".into());
    assert_eq!(run_on(&s, &[], std::slice::from_ref(&block), &d), attach);
    // Linked to its device: nothing to do.
    d.loops.push(lo(5, &name, false));
    assert_eq!(run_on(&s, &[], std::slice::from_ref(&block), &d), vec![]);
    // A second device for it, one of a file with no PV, one whose file was deleted: detached.
    d.loops.push(lo(2, &name, false));
    d.loops.push(lo(3, "pvc-gone", false));
    d.loops.push(lo(4, &name, true));
    let detached: Vec<String> = run_on(&s, &[], std::slice::from_ref(&block), &d)
        .into_iter()
        .map(|a| match a {
            Action::Detach { device, why } => format!("{} {why}", device.display()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        detached,
        [
            format!("/dev/loop2 a second device for {name}"),
            "/dev/loop3 no PV on this node wants pvc-gone".into(),
            format!("/dev/loop4 its file {ROOT}/{name}.img was deleted"),
        ]
    );
    // A volume reclaimed now: its removal detaches it, no second detach.
    let released = pv(json!({"spec": {"volumeMode": "Block"}, "status": {"phase": "Released"}}));
    d.loops.truncate(1);
    assert!(matches!(
        run_on(&s, &[], &[released], &d)[..],
        [Action::Reclaim { .. }]
    ));
}

#[test]
fn a_block_claim_being_provisioned_keeps_its_device() {
    // A pass that attached the volume and stopped before its PV: the next one finishes it and
    // does not detach the device it is about to use.
    let name = format!("pvc-{UID}");
    let mut d = disk();
    d.present.insert(name.clone());
    d.links.insert(name.clone(), "/dev/loop1".into());
    d.loops.push(lo(1, &name, false));
    let c = claim(json!({"spec": {"volumeMode": "Block"}}));
    assert!(matches!(
        run_on(&scope(false), &[c], &[], &d)[..],
        [Action::Provision { .. }]
    ));
}

#[test]
fn a_grown_claim_grows_its_volume_when_the_class_allows() {
    let s = scope(false);
    let big = |class: &str| {
        bound(
            json!({"spec": {"resources": {"requests": {"storage": "3Gi"}}},
                     "status": {"conditions": [{"type": "Resizing", "status": "True"},
                                               {"type": "Other", "status": "True"}]}}),
        )
        .tap(|c| c.spec.as_mut().unwrap().storage_class_name = Some(class.into()))
    };
    let block = pv(json!({"spec": {"volumeMode": "Block"}}));
    let actions = run(&s, &[big("local")], std::slice::from_ref(&block));
    let [
        Action::Grow {
            volume,
            capacity,
            claim_status,
            ..
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}");
    };
    assert_eq!(volume.bytes, 3 << 30);
    assert_eq!(volume.mode, VolumeMode::Block);
    assert_eq!(capacity.0, "3Gi");
    assert_eq!(
        claim_status,
        &json!({"status": {"capacity": {"storage": "3Gi"}, "allocatedResources": {"storage": "3Gi"},
                "allocatedResourceStatuses": null,
                "conditions": [{"type": "Other", "status": "True"}]}})
    );
    // The PV's class decides: one that does not allow expansion refuses.
    let fixed = pv(json!({"spec": {"storageClassName": "fixed"}}));
    let m = refusal(&run(&s, &[big("fixed")], &[fixed]));
    assert!(
        m.contains("3Gi is more than the volume's 1Gi") && m.contains("\"fixed\""),
        "{m}"
    );
    // Block growth beyond the free space.
    let tight = Disk {
        free_bytes: 1 << 30,
        ..Disk::default()
    };
    let m = refusal(&run_on(&s, &[big("local")], &[block], &tight));
    assert!(
        m.contains("needs 2Gi more, but its node has 1Gi free"),
        "{m}"
    );
    // Same size: nothing; a claim of another uid on the PV: nothing.
    assert_eq!(run(&s, &[bound(json!({}))], &[pv(json!({}))]), vec![]);
    let other = pv(json!({"spec": {"claimRef": {"uid": "someone-else"}}}));
    assert_eq!(run(&s, &[big("local")], &[other]), vec![]);
    // A PV with our annotation but a path outside the root is never touched.
    let elsewhere = pv(json!({"spec": {"local": {"path": "/etc"}}}));
    assert_eq!(run(&s, &[big("local")], &[elsewhere]), vec![]);
}

#[test]
fn a_claims_capacity_catches_up_with_a_grown_pv() {
    let grown = pv(json!({"spec": {"capacity": {"storage": "2Gi"}}}));
    let c = bound(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}));
    assert!(matches!(
        run(&scope(false), &[c], std::slice::from_ref(&grown))[..],
        [Action::SetClaimCapacity { .. }]
    ));
    // Before the binder wrote any capacity, the claim's status is not ours to write.
    let mut fresh = bound(json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}));
    fresh.status = None;
    assert_eq!(run(&scope(false), &[fresh], &[grown]), vec![]);
}

trait Tap: Sized {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}
impl Tap for PersistentVolumeClaim {}

proptest! {
    /// Whatever a user puts in a claim's size and volume mode, a pass answers: a volume of
    /// exactly that request, or a refusal naming a field.
    #[test]
    fn any_claim_gets_a_volume_of_its_request_or_a_reason(
        size in "[0-9]{0,14}(\\.[0-9]{0,3})?(Ki|Mi|Gi|Ti|k|M|G|m|e3)?|\\PC{0,8}",
        mode in prop::sample::select(vec!["Filesystem", "Block", "block", ""]),
        free in any::<u64>(),
    ) {
        let c = claim(json!({"spec": {"volumeMode": mode,
            "resources": {"requests": {"storage": size}}}}));
        let d = Disk { free_bytes: free, ..Disk::default() };
        match run_on(&scope(false), &[c], &[], &d).as_slice() {
            [Action::Provision { volume, pv, .. }] => {
                let spec = pv.spec.as_ref().unwrap();
                prop_assert_eq!(&spec.capacity.as_ref().unwrap()["storage"].0, &size);
                prop_assert!(volume.bytes > 0 && volume.bytes <= free);
            }
            [Action::Refuse { message, .. }] => prop_assert!(message.starts_with("spec."), "{}", message),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

mod restore {
    use super::*;
    use crate::storage::snapshots::Meta;
    use kubevirt_api::volumesnapshot::v1::{VolumeSnapshot, VolumeSnapshotContent};

    fn snapshot(ready: bool) -> (VolumeSnapshot, VolumeSnapshotContent) {
        let vs = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "snap", "namespace": "ns"},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
            "status": {"boundVolumeSnapshotContentName": "snapcontent-1", "readyToUse": ready}}))
        .unwrap();
        let content = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": "snapcontent-1"},
            "spec": {"deletionPolicy": "Delete", "driver": PROVISIONER,
                "source": {"volumeHandle": "pvc-0"},
                "volumeSnapshotRef": {"name": "snap", "namespace": "ns"}},
            "status": {"readyToUse": ready, "snapshotHandle": "snapcontent-1", "restoreSize": 1073741824}}))
        .unwrap();
        (vs, content)
    }

    fn on_disk(mode: &str) -> Disk {
        let mut d = disk();
        d.snapshots.insert(
            "snapcontent-1".into(),
            Meta {
                restore_size: 1 << 30,
                volume_mode: mode.into(),
                creation_time: 1,
                source: "pvc-0".into(),
            },
        );
        d
    }

    fn restoring(size: &str) -> PersistentVolumeClaim {
        claim(
            json!({"spec": {"resources": {"requests": {"storage": size}},
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}}}),
        )
    }

    fn run_restore(c: PersistentVolumeClaim, ready: bool, disk: &Disk) -> Vec<Action> {
        let (vs, content) = snapshot(ready);
        let classes = [class("local", json!({}))];
        plan(
            &scope(false),
            Observed {
                claims: &[c],
                volumes: &[],
                classes: &classes,
                disk,
                snapshots: &[vs],
                contents: &[content],
            },
        )
    }

    #[test]
    fn a_ready_snapshot_on_this_node_fills_a_claim_as_large_or_larger() {
        let actions = run_restore(restoring("2Gi"), true, &on_disk("Filesystem"));
        let [
            Action::Restore {
                volume,
                snapshot,
                pv,
                ..
            },
        ] = actions.as_slice()
        else {
            panic!("{actions:?}");
        };
        assert_eq!(snapshot, "snapcontent-1");
        assert_eq!(volume.bytes, 2 << 30);
        assert_eq!(pv.metadata.name.as_deref(), Some(volume.name.as_str()));
    }

    #[test]
    fn what_cannot_be_restored_is_refused_naming_why() {
        let m = refusal(&run_restore(
            restoring("512Mi"),
            true,
            &on_disk("Filesystem"),
        ));
        assert_eq!(
            m,
            "spec.resources.requests.storage: requested volume size 536870912 (512Mi) is less than the size 1073741824 (1Gi) for the source snapshot snap"
        );
        let m = refusal(&run_restore(
            restoring("1Gi"),
            false,
            &on_disk("Filesystem"),
        ));
        assert_eq!(m, "spec.dataSource: snapshot ns/snap is not Ready");
        let m = refusal(&run_restore(restoring("1Gi"), true, &disk()));
        assert!(m.contains("is not on node"), "{m}");
        let m = refusal(&run_restore(restoring("1Gi"), true, &on_disk("Block")));
        assert!(
            m.starts_with("spec.volumeMode: the snapshot ns/snap is of a Block volume"),
            "{m}"
        );
    }
}
