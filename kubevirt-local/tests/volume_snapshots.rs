//! Volume snapshots end to end (issue 17), as a user drives them with the real kubectl on
//! `kubevirt-local up` with its node: a claim of the default StorageClass that the node's
//! provisioner made, a pod writing a marker, a VolumeSnapshot of the claim (the plane's snapshot
//! controller binds it to a content, the node's snapshotter copies the volume), then the marker
//! changed, a claim restored from the snapshot and a pod reading the first marker; a Block claim
//! the same way. Deletion policies: Delete removes the content and the snapshot's files, Retain
//! keeps both. Bad input: a snapshot of a missing claim, a restore smaller than the snapshot.
//! Needs root, containerd, runc, the CNI plugins, busybox-static and losetup.

mod common;

use std::path::{Path, PathBuf};

use common::node::*;
use kubevirt_testsupport::tempdir;
use serde_json::Value;

const NODE: &str = "kv-volume-snapshots";

/// `up` with a busybox image from the node's own registry; the image's name.
fn start(dir: &Path) -> (Up, String) {
    let tools = ["sh", "cat", "echo", "dd", "head", "sleep"];
    let (up, _, image) = start_up_busybox(dir, NODE, &tools, &["--no-node"]);
    (up, image)
}

/// A claim of the default class; `from` restores a VolumeSnapshot.
fn claim(name: &str, size: &str, mode: &str, from: Option<&str>) -> String {
    let source = from
        .map(|s| {
            format!(
                "\n  dataSource: {{apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: {s}}}"
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  volumeMode: {mode}\n  resources: {{requests: {{storage: {size}}}}}{source}\n"
    )
}

/// A pod (scheduled, so the scheduler picks the claim's node) running `script` once with the
/// claim at `/data` (Filesystem) or as the device `/dev/xvda` (Block).
fn pod(name: &str, image: &str, claim: &str, block: bool, script: &str) -> String {
    let attach = if block {
        "    volumeDevices: [{name: data, devicePath: /dev/xvda}]"
    } else {
        "    volumeMounts: [{name: data, mountPath: /data}]"
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["/bin/sh", "-c", {script:?}]
{attach}
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#
    )
}

/// Runs the pod to completion; its termination message.
fn run_pod(up: &Up, yaml: &str, name: &str) -> String {
    up.ok(&["apply", "-f", "-"], Some(yaml));
    let p = eventually(&format!("pod {name} finished"), 120, || {
        up.pod(name).filter(|p| {
            matches!(
                p["status"]["phase"].as_str(),
                Some("Succeeded") | Some("Failed")
            )
        })
    });
    assert_eq!(p["status"]["phase"], "Succeeded", "{p}");
    p["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn snapshot(name: &str, claim: &str, class: Option<&str>) -> String {
    let class = class
        .map(|c| format!("\n  volumeSnapshotClassName: {c}"))
        .unwrap_or_default();
    format!(
        "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshot\nmetadata: {{name: {name}}}\nspec:\n  source: {{persistentVolumeClaimName: {claim}}}{class}\n"
    )
}

fn ready(up: &Up, name: &str) -> Value {
    eventually(&format!("VolumeSnapshot {name} readyToUse"), 90, || {
        up.get("volumesnapshot", name)
            .filter(|s| s["status"]["readyToUse"] == true)
    })
}

fn snapshots_dir(up: &Up) -> PathBuf {
    up.data.join("node/volumes/snapshots")
}

fn gone(up: &Up, kind: &str, name: &str) {
    eventually(&format!("{kind} {name} gone"), 60, || {
        up.get(kind, name).is_none().then_some(())
    });
}

fn events_of(up: &Up, name: &str) -> String {
    up.ok(
        &[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
        None,
    )
}

#[test]
fn a_snapshot_keeps_a_volume_as_it_was_and_restores_into_a_new_claim() {
    require_node!();
    let _node = node_slot();
    let dir = tempdir("volume-snapshots");
    let (up, image) = start(&dir);

    // The default VolumeSnapshotClass `up` made.
    let class = up.get("volumesnapshotclass", "local").expect("the class");
    assert_eq!(class["driver"], "kubevirt-rs.io/local-volume");
    assert_eq!(class["deletionPolicy"], "Delete");

    // A claim of the default class, written by a pod.
    up.ok(
        &["apply", "-f", "-"],
        Some(&claim("data", "64Mi", "Filesystem", None)),
    );
    let w = pod("writer", &image, "data", false, "echo first > /data/marker");
    run_pod(&up, &w, "writer");

    // The snapshot: bound to snapcontent-<uid>, ready, 64Mi, with the default class written.
    up.ok(
        &["apply", "-f", "-"],
        Some(&snapshot("snap1", "data", None)),
    );
    let vs = ready(&up, "snap1");
    let uid = vs["metadata"]["uid"].as_str().unwrap().to_string();
    let content = format!("snapcontent-{uid}");
    assert_eq!(
        vs["status"]["boundVolumeSnapshotContentName"],
        content.as_str(),
        "{vs}"
    );
    assert_eq!(vs["status"]["restoreSize"], "64Mi", "{vs}");
    assert_eq!(vs["spec"]["volumeSnapshotClassName"], "local", "{vs}");
    assert!(vs["status"]["creationTime"].is_string(), "{vs}");
    let finalizers = vs["metadata"]["finalizers"].to_string();
    assert!(
        finalizers.contains("volumesnapshot-as-source-protection"),
        "{finalizers}"
    );
    assert!(
        finalizers.contains("volumesnapshot-bound-protection"),
        "{finalizers}"
    );
    let vsc = up
        .get("volumesnapshotcontent", &content)
        .expect("the content");
    assert_eq!(vsc["spec"]["driver"], "kubevirt-rs.io/local-volume");
    assert_eq!(vsc["spec"]["deletionPolicy"], "Delete");
    assert_eq!(vsc["status"]["snapshotHandle"], content.as_str());
    assert_eq!(vsc["status"]["restoreSize"], 64 << 20);
    assert!(vsc["status"]["creationTime"].is_i64(), "{vsc}");
    let copy = snapshots_dir(&up).join(&content).join("volume/marker");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), "first\n");

    // kubectl shows upstream's columns, through the short names too.
    let table = up.ok(&["get", "vs", "snap1"], None);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READYTOUSE",
            "SOURCEPVC",
            "SOURCESNAPSHOTCONTENT",
            "RESTORESIZE",
            "SNAPSHOTCLASS",
            "SNAPSHOTCONTENT",
            "CREATIONTIME",
            "AGE"
        ],
        "{table}"
    );
    let row = table.lines().nth(1).unwrap();
    for cell in ["snap1", "true", "data", "64Mi", "local", content.as_str()] {
        assert!(row.contains(cell), "{cell} not in {row}");
    }
    let contents = up.ok(&["get", "vsc", &content], None);
    assert!(
        contents.starts_with("NAME") && contents.contains("VOLUMESNAPSHOTNAMESPACE"),
        "{contents}"
    );
    let classes = up.ok(&["get", "vsclass"], None);
    assert!(classes.contains("kubevirt-rs.io/local-volume"), "{classes}");

    // The volume changes; a claim from the snapshot has it as it was.
    let c = pod(
        "changer",
        &image,
        "data",
        false,
        "echo second > /data/marker",
    );
    run_pod(&up, &c, "changer");
    up.ok(
        &["apply", "-f", "-"],
        Some(&claim("restored", "128Mi", "Filesystem", Some("snap1"))),
    );
    let r = pod(
        "reader",
        &image,
        "restored",
        false,
        "cat /data/marker > /dev/termination-log",
    );
    assert_eq!(run_pod(&up, &r, "reader"), "first\n");
    let events = events_of(&up, "restored");
    assert!(
        events.contains(&format!("from snapshot {content}")),
        "{events}"
    );

    // A restore smaller than the snapshot: refused with a clear event, nothing made.
    up.ok(
        &["apply", "-f", "-"],
        Some(&claim("too-small", "32Mi", "Filesystem", Some("snap1"))),
    );
    let s = pod("small", &image, "too-small", false, "true");
    up.ok(&["apply", "-f", "-"], Some(&s));
    let refused = eventually("the too-small claim refused", 60, || {
        let e = events_of(&up, "too-small");
        e.contains("ProvisioningFailed").then_some(e)
    });
    assert!(
        refused.contains(
            "requested volume size 33554432 (32Mi) is less than the size 67108864 (64Mi) for the source snapshot snap1"
        ),
        "{refused}"
    );
    let pvc = up.get("pvc", "too-small").unwrap();
    assert_eq!(pvc["status"]["phase"], "Pending", "{pvc}");
    up.ok(&["delete", "pod", "small", "--wait=false"], None);

    // A snapshot of a claim that does not exist: the error on its status, no content.
    let before = up.ok(&["get", "vsc", "-o", "name"], None);
    up.ok(
        &["apply", "-f", "-"],
        Some(&snapshot("orphan", "nope", None)),
    );
    let failed = eventually("the orphan snapshot's error", 60, || {
        up.get("vs", "orphan")
            .filter(|s| s["status"]["error"]["message"].is_string())
    });
    let message = failed["status"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("failed to retrieve PVC nope") && message.contains("not found"),
        "{message}"
    );
    assert_eq!(failed["status"]["readyToUse"], false, "{failed}");
    assert!(events_of(&up, "orphan").contains("SnapshotContentCreationFailed"));
    assert_eq!(up.ok(&["get", "vsc", "-o", "name"], None), before);
    up.ok(&["delete", "vs", "orphan"], None);

    // Retain: deleting the snapshot keeps the content and the snapshot's files.
    let retain = "apiVersion: snapshot.storage.k8s.io/v1\nkind: VolumeSnapshotClass\nmetadata: {name: keep}\ndriver: kubevirt-rs.io/local-volume\ndeletionPolicy: Retain\n";
    up.ok(&["apply", "-f", "-"], Some(retain));
    up.ok(
        &["apply", "-f", "-"],
        Some(&snapshot("snap2", "data", Some("keep"))),
    );
    let kept_uid = ready(&up, "snap2")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let kept = format!("snapcontent-{kept_uid}");
    up.ok(&["delete", "vs", "snap2", "--timeout=60s"], None);
    gone(&up, "vs", "snap2");
    let vsc = up.get("vsc", &kept).expect("a Retain content stays");
    assert_eq!(vsc["spec"]["deletionPolicy"], "Retain");
    assert!(
        snapshots_dir(&up)
            .join(&kept)
            .join("volume/marker")
            .is_file()
    );

    // Delete: held while a claim is still being restored from it (the too-small one), then the
    // snapshot, its content and its files go.
    up.ok(&["delete", "vs", "snap1", "--wait=false"], None);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let held = up.get("vs", "snap1").expect("held by the pending restore");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    assert!(up.get("vsc", &content).is_some());
    up.ok(&["delete", "pvc", "too-small", "--wait=false"], None);
    gone(&up, "vs", "snap1");
    gone(&up, "vsc", &content);
    eventually("the snapshot's files removed", 30, || {
        (!snapshots_dir(&up).join(&content).exists()).then_some(())
    });

    // A Block claim: written through the device, snapshotted, restored into a larger claim.
    up.ok(
        &["apply", "-f", "-"],
        Some(&claim("disk", "16Mi", "Block", None)),
    );
    let w = pod(
        "block-writer",
        &image,
        "disk",
        true,
        "echo BLOCKMARK-1 | dd of=/dev/xvda bs=512 seek=3 conv=fsync",
    );
    run_pod(&up, &w, "block-writer");
    up.ok(
        &["apply", "-f", "-"],
        Some(&snapshot("disk-snap", "disk", None)),
    );
    let vs = ready(&up, "disk-snap");
    assert_eq!(vs["status"]["restoreSize"], "16Mi", "{vs}");
    let w = pod(
        "block-changer",
        &image,
        "disk",
        true,
        "echo BLOCKMARK-2 | dd of=/dev/xvda bs=512 seek=3 conv=fsync",
    );
    run_pod(&up, &w, "block-changer");
    up.ok(
        &["apply", "-f", "-"],
        Some(&claim("disk-restored", "32Mi", "Block", Some("disk-snap"))),
    );
    let r = pod(
        "block-reader",
        &image,
        "disk-restored",
        true,
        "dd if=/dev/xvda bs=512 skip=3 count=1 | head -c 11 > /dev/termination-log",
    );
    assert_eq!(run_pod(&up, &r, "block-reader"), "BLOCKMARK-1");
    let pvc = up.get("pvc", "disk-restored").unwrap();
    assert_eq!(pvc["status"]["capacity"]["storage"], "32Mi", "{pvc}");

    let data = up.data.clone();
    drop(up);
    assert_nothing_left(&data);
}
