use super::*;
use crate::snapshot::testing::*;

#[test]
fn claim_backed_volumes_with_a_class_are_included_others_excluded() {
    let got = decide(&vm(), &claims(), &storage_classes(), &snapshot_classes());
    let included: Vec<(&str, &str, &str)> = got
        .included
        .iter()
        .map(|i| {
            (
                i.volume.as_str(),
                i.claim.metadata.name.as_deref().unwrap_or_default(),
                i.class.as_str(),
            )
        })
        .collect();
    assert_eq!(
        included,
        [
            ("root", "vm1-root", "local-snapshots"),
            ("data", "data-claim", "local-snapshots")
        ]
    );
    let excluded: Vec<(&str, bool)> = got
        .excluded
        .iter()
        .map(|e| (e.volume.as_str(), e.claim_backed))
        .collect();
    assert_eq!(excluded, [("boot", false), ("init", false)]);
    assert_eq!(
        got.excluded[0].reason,
        "a containerDisk volume is not snapshotted"
    );
    assert!(
        !got.partial(),
        "containerDisk and cloud-init never make it partial"
    );
    assert_eq!(got.nothing_snapshottable("ns/vm1"), None);
}

#[test]
fn a_claim_without_a_snapshot_class_makes_the_snapshot_partial() {
    let mut claims = claims();
    claims.insert("data-claim".into(), claim("data-claim", "other"));
    let got = decide(&vm(), &claims, &storage_classes(), &snapshot_classes());
    assert_eq!(got.included.len(), 1);
    let data = got
        .excluded
        .iter()
        .find(|e| e.volume == "data")
        .expect("data is excluded");
    assert!(data.claim_backed);
    assert_eq!(
        data.reason,
        "no VolumeSnapshotClass for StorageClass other (driver example.com/other)"
    );
    assert!(got.partial());
    assert_eq!(got.nothing_snapshottable("ns/vm1"), None);
}

#[test]
fn nothing_snapshottable_names_every_claim_volume() {
    let got = decide(&vm(), &claims(), &storage_classes(), &[]);
    assert!(got.included.is_empty());
    let local =
        "no VolumeSnapshotClass for StorageClass local (driver kubevirt-rs.io/local-volume)";
    assert_eq!(
        got.nothing_snapshottable("ns/vm1"),
        Some(format!(
            "no volume of VirtualMachine ns/vm1 can be snapshotted: volume root: {local}; volume data: {local}"
        ))
    );
}

#[test]
fn missing_claims_and_classes_are_named() {
    let mut claims = claims();
    claims.remove("data-claim");
    let mut no_class = claim("vm1-root", "");
    no_class.spec.as_mut().expect("spec").storage_class_name = None;
    claims.insert("vm1-root".into(), no_class);
    let got = decide(&vm(), &claims, &storage_classes(), &snapshot_classes());
    let reasons: Vec<&str> = got.excluded.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons[..2],
        [
            "claim vm1-root has no StorageClass",
            "claim data-claim does not exist"
        ]
    );
}

#[test]
fn several_classes_of_a_driver_need_a_default() {
    let sc = storage_class("local", "d");
    let class = |name: &str, default| SnapshotClass {
        name: name.into(),
        driver: "d".into(),
        default,
    };
    assert_eq!(
        class_for(&sc, &[class("a", false), class("b", true)]),
        Ok("b".into())
    );
    assert_eq!(
        class_for(&sc, &[class("a", false), class("b", false)]),
        Err("2 matching VolumeSnapshotClasses for local and none is the default".into())
    );
    assert_eq!(class_for(&sc, &[class("a", false)]), Ok("a".into()));
}

#[test]
fn the_vm_status_says_which_volumes_can_be_snapshotted_in_upstreams_words() {
    let mut claims = claims();
    claims.insert("data-claim".into(), claim("data-claim", "other"));
    let got = decide(&vm(), &claims, &storage_classes(), &snapshot_classes());
    let statuses: Vec<(String, bool, Option<String>)> = got
        .statuses(&vm())
        .into_iter()
        .map(|s| (s.name, s.enabled, s.reason))
        .collect();
    let names: Vec<&str> = statuses.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        ["root", "data", "boot", "init"],
        "the VM's volume order"
    );
    assert_eq!(statuses[0], ("root".into(), true, None));
    assert_eq!(
        statuses[2].2.as_deref(),
        Some("Snapshot is not supported for this volumeSource type [boot]")
    );
    assert_eq!(
        statuses[1],
        (
            "data".into(),
            false,
            Some("No VolumeSnapshotClass: Volume snapshots are not configured for this StorageClass [other] [data]".into())
        )
    );
}
