//! Issue 17 (KubeVirt's snapshot controllers) end to end, as a user drives it with kubectl on
//! `kubevirt-local up` with its node: a VM with a blank DataVolume boots; its guest writes its
//! marker to the disk (the demo guest's `disktest` writes sector 1); an online
//! VirtualMachineSnapshot (the VM running) succeeds with Online/NoGuestAgent; the marker is then
//! changed (on the host, in the volume's image, while the VM is stopped: the demo guest writes
//! only its one fixed marker); a VirtualMachineRestore to the same VM completes and the
//! guest's marker is back; a restore of the running VM waits for it (the default
//! `targetReadinessPolicy`) or stops it (`StopTarget`, with a `volumeRestoreOverrides` name); a
//! restore to a new VM gives it its own copy (`PrefixTargetName`, `patches`); deleting the snapshot
//! deletes its content and VolumeSnapshots. The columns `kubectl get vmsnapshot,vmrestore` shows
//! are checked on the way.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::node::*;
use kubevirt_testsupport::{
    DemoVm, Profile, controller_binary, demo_image, launcher_binary, tempdir,
};

const NODE: &str = "kv-vmsnapshots";
/// What the demo guest's `disktest` writes to sector 1 of vda.
const GUEST_MARKER: &str = "kubevirt-rs demo guest wrote this to vda\n";
/// What the test writes over it while the VM is stopped.
const CHANGED: &str = "changed after the snapshot!!!!!!!!!!!!!!!";
/// The byte offset of sector 1.
const SECTOR1: u64 = 512;

/// The text at sector 1 of the disk image of claim `name`.
fn sector1(up: &Up, name: &str) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(up.volume_path(name).join("disk.img")).unwrap();
    f.seek(SeekFrom::Start(SECTOR1)).unwrap();
    let mut buf = [0u8; 64];
    f.read_exact(&mut buf).unwrap();
    String::from_utf8_lossy(&buf)
        .trim_end_matches('\0')
        .to_string()
}

fn running_vmi(up: &Up, data: &std::path::Path, vm: &str) -> PathBuf {
    let vmi = eventually(&format!("VM {vm}'s instance Running"), 300, || {
        up.get("vmi", vm)
            .filter(|v| v["status"]["phase"] == "Running")
    });
    let uid = vmi["metadata"]["uid"].as_str().unwrap();
    data.join("node/launchers").join(uid).join("console.sock")
}

fn stop(up: &Up, vm: &str) {
    up.ok(
        &[
            "patch",
            "vm",
            vm,
            "--type=merge",
            "-p",
            r#"{"spec":{"runStrategy":"Halted"}}"#,
        ],
        None,
    );
    eventually(&format!("VM {vm} stopped"), 120, || {
        up.get("vmi", vm).is_none().then_some(())
    });
}

/// Starts the stopped `vm` and checks its guest runs on `claim` (of the WaitForFirstConsumer
/// class, bound by this first run), which holds the guest's marker again.
fn boots_from(up: &Up, data: &std::path::Path, vm: &str, claim: &str) {
    let start = r#"{"spec":{"runStrategy":"Always"}}"#;
    up.ok(&["patch", "vm", vm, "--type=merge", "-p", start], None);
    let socket = running_vmi(up, data, vm);
    eventually("the restored guest lists its disk", 60, || {
        console_answer(&socket, "disks", "vda")
    });
    assert_eq!(sector1(up, claim), GUEST_MARKER);
}

#[test]
fn an_online_snapshot_restores_the_vm_and_a_new_one() {
    require_node!();
    let _node = node_slot();
    let launcher = launcher_binary(Profile::Debug);
    controller_binary(Profile::Debug);
    let dir = tempdir("vmsnapshots");
    let data = dir.join("data");
    let (up, ready) = start_up_node(&data, NODE, &["--launcher", launcher.to_str().unwrap()]);
    assert!(ready["importerImage"].is_string(), "{ready}");
    let classes = up.ok(&["get", "volumesnapshotclass"], None);
    assert!(classes.contains("kubevirt-rs.io/local-volume"), "{classes}");

    // The VM boots from its blank DataVolume; its guest writes its marker.
    let image = demo_image(&dir);
    let vm = DemoVm::new("snapvm", &image).data_volume("{blank: {}}", "32Mi");
    up.ok(&["apply", "-f", "-"], Some(&vm.yaml()));
    let socket = running_vmi(&up, &data, "snapvm");
    eventually("the guest writes its marker", 60, || {
        console_answer(
            &socket,
            "disktest",
            "vda: wrote sector 1, flushed, read it back: ok",
        )
    });

    // The VM says which of its volumes a snapshot can copy.
    eventually("the VM's volumeSnapshotStatuses", 60, || {
        up.get("vm", "snapvm").filter(|vm| {
            vm["status"]["volumeSnapshotStatuses"]
                == serde_json::json!([{"name": "root", "enabled": true}])
        })
    });

    // An online snapshot: the VM keeps running.
    let snapshot = r#"apiVersion: snapshot.kubevirt.io/v1beta1
kind: VirtualMachineSnapshot
metadata: {name: snap1}
spec:
  source: {apiGroup: kubevirt.io, kind: VirtualMachine, name: snapvm}
"#;
    let started = std::time::Instant::now();
    up.ok(&["apply", "-f", "-"], Some(snapshot));
    let snap = eventually("the snapshot Succeeded and ready", 120, || {
        up.get("vmsnapshot", "snap1")
            .filter(|s| s["status"]["phase"] == "Succeeded" && s["status"]["readyToUse"] == true)
    });
    eprintln!("online snapshot ready in {:?}", started.elapsed());
    let st = &snap["status"];
    assert!(st["creationTime"].is_string(), "{snap}");
    assert_eq!(
        st["indications"],
        serde_json::json!(["NoGuestAgent", "Online"]),
        "{snap}"
    );
    assert_eq!(
        st["snapshotVolumes"]["includedVolumes"],
        serde_json::json!(["root"])
    );
    assert_eq!(condition(&snap, "Ready")["status"], "True", "{snap}");
    assert_eq!(condition(&snap, "Progressing")["status"], "False", "{snap}");
    let vm = up.get("vm", "snapvm").unwrap();
    assert_eq!(st["sourceUID"], vm["metadata"]["uid"]);
    assert!(
        vm["status"]["snapshotInProgress"].is_null(),
        "unlocked: {vm}"
    );
    // Paused while its volume was cut (no guest agent to freeze it), running again after.
    eventually("the VMI unpaused", 30, || {
        up.get("vmi", "snapvm")
            .filter(|v| v["status"]["phase"] == "Running" && condition(v, "Paused").is_null())
    });
    eventually("the guest answers after the snapshot", 30, || {
        console_answer(&socket, "help", "commands:")
    });
    let content_name = st["virtualMachineSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let content = up
        .get("vmsnapshotcontent", &content_name)
        .expect("the content");
    assert_eq!(content["status"]["readyToUse"], true, "{content}");
    let vs_name = content["spec"]["volumeBackups"][0]["volumeSnapshotName"]
        .as_str()
        .unwrap()
        .to_string();
    let vs = up
        .get("volumesnapshot", &vs_name)
        .expect("the VolumeSnapshot");
    assert_eq!(
        vs["spec"]["source"]["persistentVolumeClaimName"],
        "snapvm-root"
    );
    let table = up.ok(&["get", "vmsnapshot"], None);
    assert!(
        table.contains("SOURCEKIND") && table.contains("READYTOUSE"),
        "{table}"
    );
    assert!(
        table.contains("snap1") && table.contains("Succeeded") && table.contains("true"),
        "{table}"
    );

    // Stop the VM; change its marker (the demo guest writes only one).
    stop(&up, "snapvm");
    assert_eq!(sector1(&up, "snapvm-root"), GUEST_MARKER);
    {
        use std::io::{Seek, SeekFrom, Write};
        let path = up.volume_path("snapvm-root").join("disk.img");
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(SECTOR1)).unwrap();
        f.write_all(CHANGED.as_bytes()).unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(sector1(&up, "snapvm-root"), CHANGED);

    // A restore to a running VM is refused with upstream's words.
    let restore = |name: &str, target: &str| {
        format!(
            "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineRestore\nmetadata: {{name: {name}}}\nspec:\n  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {target}}}\n  virtualMachineSnapshotName: snap1\n"
        )
    };
    let missing = up.kubectl(
        &["apply", "-f", "-"],
        Some(&restore("nosnap", "snapvm").replace("snap1", "nosuch")),
    );
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("VirtualMachineSnapshot \"nosuch\" does not exist"),
        "{err}"
    );

    // Restore to the same (stopped) VM: the guest's marker is back.
    let started = std::time::Instant::now();
    up.ok(&["apply", "-f", "-"], Some(&restore("restore1", "snapvm")));
    let r = eventually("the restore complete", 180, || {
        up.get("vmrestore", "restore1")
            .filter(|r| r["status"]["complete"] == true)
    });
    eprintln!("restore to the same VM complete in {:?}", started.elapsed());
    assert!(r["status"]["restoreTime"].is_string(), "{r}");
    assert_eq!(condition(&r, "Ready")["status"], "True", "{r}");
    let restored = r["status"]["restores"][0]["persistentVolumeClaim"]
        .as_str()
        .unwrap()
        .to_string();
    let uid = r["metadata"]["uid"].as_str().unwrap();
    assert_eq!(restored, format!("restore-{uid}-root"));
    assert_eq!(
        r["status"]["deletedDataVolumes"],
        serde_json::json!(["snapvm-root"])
    );
    let vm = up.get("vm", "snapvm").unwrap();
    assert!(
        vm["status"]["restoreInProgress"].is_null(),
        "unlocked: {vm}"
    );
    assert_eq!(
        vm["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"],
        restored.as_str()
    );
    let table = up.ok(&["get", "vmrestore"], None);
    assert!(
        table.contains("TARGETKIND") && table.contains("restore1"),
        "{table}"
    );

    // The restored VM boots from its restored disk (its DataVolume adopted the claim).
    boots_from(&up, &data, "snapvm", &restored);
    // A restore of a running VM waits for it to stop (the default policy, WaitGracePeriod),
    // locking and writing nothing meanwhile...
    up.ok(
        &["apply", "-f", "-"],
        Some(&restore("restore-running", "snapvm")),
    );
    let waiting = eventually("the restore waits for its running target", 60, || {
        up.get("vmrestore", "restore-running").filter(|r| {
            condition(r, "Ready")["reason"]
                .as_str()
                .is_some_and(|m| m.starts_with("Waiting for target VM to be powered off"))
        })
    });
    assert_eq!(
        condition(&waiting, "Progressing")["status"],
        "False",
        "{waiting}"
    );
    let events = up.ok(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=restore-running",
        ],
        None,
    );
    assert!(events.contains("RestoreTargetNotReady"), "{events}");
    let vm = up.get("vm", "snapvm").unwrap();
    assert!(
        vm["status"]["restoreInProgress"].is_null(),
        "not locked: {vm}"
    );
    assert!(up.get("vmi", "snapvm").is_some(), "still running");
    up.ok(
        &["delete", "vmrestore", "restore-running", "--wait=true"],
        None,
    );
    // ...and one with `targetReadinessPolicy: StopTarget` stops it itself; its override names
    // the restored claim and labels it.
    let stop_target = format!(
        "{}  targetReadinessPolicy: StopTarget\n  volumeRestoreOverrides:\n  - {{volumeName: root, restoreName: snapvm-root-again, labels: {{restored-by: restore-stop}}}}\n",
        restore("restore-stop", "snapvm")
    );
    up.ok(&["apply", "-f", "-"], Some(&stop_target));
    let r = eventually("the StopTarget restore complete", 180, || {
        up.get("vmrestore", "restore-stop")
            .filter(|r| r["status"]["complete"] == true)
    });
    assert_eq!(
        r["status"]["restores"][0]["persistentVolumeClaim"], "snapvm-root-again",
        "{r}"
    );
    assert!(up.get("vmi", "snapvm").is_none(), "stopped by the restore");
    let vm = up.get("vm", "snapvm").unwrap();
    assert_eq!(vm["spec"]["runStrategy"], "Halted", "{vm}");
    let claim = up
        .get("pvc", "snapvm-root-again")
        .expect("the restored claim");
    assert_eq!(
        claim["metadata"]["labels"]["restored-by"], "restore-stop",
        "{claim}"
    );
    boots_from(&up, &data, "snapvm", "snapvm-root-again");
    stop(&up, "snapvm");

    // Restore to a new VM: its own claim, with the guest's marker.
    // (PrefixTargetName names its claims after it; a patch labels it.)
    let to_copy = format!(
        "{}  volumeRestorePolicy: PrefixTargetName\n  patches:\n  - '{{\"op\": \"add\", \"path\": \"/spec/template/metadata/labels/copy\", \"value\": \"yes\"}}'\n",
        restore("restore2", "snapvm-copy")
    );
    up.ok(&["apply", "-f", "-"], Some(&to_copy));
    let r2 = eventually("the restore to a new VM complete", 180, || {
        up.get("vmrestore", "restore2")
            .filter(|r| r["status"]["complete"] == true)
    });
    let copy_claim = r2["status"]["restores"][0]["persistentVolumeClaim"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(copy_claim, "snapvm-copy-root");
    let copy = up.get("vm", "snapvm-copy").expect("the new VM");
    assert_eq!(
        copy["spec"]["template"]["metadata"]["labels"]["copy"], "yes",
        "{copy}"
    );
    assert_eq!(
        copy["spec"]["template"]["spec"]["volumes"][0]["dataVolume"]["name"],
        copy_claim.as_str()
    );
    eventually("the new VM's claim bound", 60, || {
        up.get("pvc", &copy_claim)
            .filter(|c| c["status"]["phase"] == "Bound")
    });
    assert_eq!(sector1(&up, &copy_claim), GUEST_MARKER);
    stop(&up, "snapvm-copy");

    // Deleting the snapshot deletes its content and its VolumeSnapshot.
    up.ok(&["delete", "vmsnapshot", "snap1", "--wait=true"], None);
    eventually("the content and VolumeSnapshot deleted", 60, || {
        (up.get("vmsnapshotcontent", &content_name).is_none()
            && up.get("volumesnapshot", &vs_name).is_none())
        .then_some(())
    });

    up.ok(&["delete", "vm", "--all", "--wait=true"], None);
    up.ok(&["delete", "vmrestore", "--all", "--wait=true"], None);
    up.ok(&["delete", "pvc", "--all", "--wait=true"], None);
    eventually("every volume deleted", 120, || {
        let pvs = up.ok(&["get", "pv", "-o", "name"], None);
        pvs.trim().is_empty().then_some(())
    });
    drop(up);
    assert_nothing_left(&data);
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(
        !loops.contains(data.to_str().unwrap()),
        "loop devices left: {loops}"
    );
}
