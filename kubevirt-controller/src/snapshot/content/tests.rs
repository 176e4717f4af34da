use super::*;
use crate::snapshot::testing::*;
use crate::snapshot::volumes::decide;

fn snapshot() -> VirtualMachineSnapshot {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s1", "namespace": "ns", "uid": "snap-uid"},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm1"}}
    }))
    .expect("the snapshot decodes")
}

fn content() -> VirtualMachineSnapshotContent {
    let inclusion = decide(&vm(), &claims(), &storage_classes(), &snapshot_classes());
    build(&snapshot(), &vm(), &inclusion.included)
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(s).expect("a time")
}

#[test]
fn the_content_copies_the_vm_and_one_backup_per_included_volume() {
    let c = content();
    assert_eq!(
        c.metadata.name.as_deref(),
        Some("vmsnapshot-content-snap-uid")
    );
    assert_eq!(c.metadata.namespace.as_deref(), Some("ns"));
    assert_eq!(c.metadata.finalizers, Some(vec![CONTENT_FINALIZER.into()]));
    assert_eq!(c.spec.virtual_machine_snapshot_name.as_deref(), Some("s1"));
    let copy = c.spec.source.virtual_machine.as_ref().expect("the VM copy");
    assert_eq!(copy.spec.as_ref(), Some(&vm().spec));
    assert_eq!(copy.status, None);
    let meta = copy.metadata.as_ref().expect("metadata");
    assert_eq!(meta.uid.as_deref(), Some("vm-uid"));
    assert_eq!(meta.resource_version, None);
    let backups = c.spec.volume_backups.as_ref().expect("backups");
    let names: Vec<(&str, Option<&str>)> = backups
        .iter()
        .map(|b| (b.volume_name.as_str(), b.volume_snapshot_name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("root", Some("vmsnapshot-snap-uid-volume-root")),
            ("data", Some("vmsnapshot-snap-uid-volume-data"))
        ]
    );
    let claim = &backups[1].persistent_volume_claim;
    assert_eq!(
        claim.metadata.as_ref().and_then(|m| m.name.as_deref()),
        Some("data-claim")
    );
    assert_eq!(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("local")
    );
    assert_eq!(
        volume_lists(&c),
        (
            vec!["root".to_string(), "data".into()],
            vec!["boot".to_string(), "init".into()]
        )
    );
}

fn cut(name: &str, ready: bool) -> Option<Progress> {
    Some(Progress {
        name: name.into(),
        ready_to_use: Some(ready),
        creation_time: Some(Time(t(50))),
        error: None,
    })
}

#[test]
fn the_content_is_created_once_every_volume_is_cut_and_ready_when_all_are() {
    let mut c = content();
    let s = status(&c, &[None, None], t(100));
    assert_eq!(
        (s.creation_time.is_some(), s.ready_to_use),
        (false, Some(false))
    );
    assert_eq!(s.error, None, "not yet created: nothing is missing");

    let uncut = Some(Progress {
        name: "b".into(),
        ..Default::default()
    });
    let s = status(&c, &[cut("a", false), uncut], t(100));
    assert_eq!(
        (s.creation_time.is_some(), s.ready_to_use),
        (false, Some(false))
    );
    assert_eq!(s.volume_snapshot_status.as_ref().map(Vec::len), Some(2));

    let s = status(&c, &[cut("a", false), cut("b", false)], t(100));
    assert_eq!(s.creation_time, Some(Time(t(100))));
    assert_eq!(s.ready_to_use, Some(false));
    c.status = Some(s);
    let s = status(&c, &[cut("a", true), cut("b", true)], t(200));
    assert_eq!(s.creation_time, Some(Time(t(100))), "kept");
    assert_eq!(s.ready_to_use, Some(true));
    assert_eq!(s.error, None);
}

#[test]
fn a_volume_snapshot_gone_after_creation_is_an_error() {
    let mut c = content();
    c.status = Some(status(&c, &[cut("a", true), cut("b", true)], t(100)));
    let s = status(&c, &[cut("a", true), None], t(200));
    assert_eq!(s.ready_to_use, Some(false));
    assert_eq!(
        s.error.and_then(|e| e.message).as_deref(),
        Some("VolumeSnapshots (vmsnapshot-snap-uid-volume-data) missing")
    );
}

#[test]
fn a_volume_snapshot_error_is_the_content_error() {
    let c = content();
    let mut failing = cut("b", false);
    if let Some(p) = failing.as_mut() {
        p.error = Some("disk full".into());
    }
    let s = status(&c, &[cut("a", true), failing], t(100));
    assert_eq!(
        s.error.and_then(|e| e.message).as_deref(),
        Some("VolumeSnapshot vmsnapshot-snap-uid-volume-data error: disk full")
    );
}
