//! Issue 17 part 3 end to end (ours, beyond upstream): a VirtualMachineSnapshot annotated
//! `snapshot.kubevirt-rs.io/memory: "true"` of a running VM saves the guest's memory state with
//! its volumes, and a VirtualMachineRestore of it resumes the guest where it was on the next
//! start instead of booting it — as a user drives it with kubectl on `kubevirt-local up` with
//! its node (VMIs in virt-launcher pods). The demo guest's `count` command counts in guest
//! memory only, so the value it answers after the restore says which memory the guest runs on:
//! one more than at the snapshot (resumed), not 1 (booted) nor one more than before the stop.
//! The same opt-in on a stopped VM gives a volume-only snapshot that says so (NoMemoryState).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::node::*;
use kubevirt_testsupport::{
    DemoVm, Profile, controller_binary, demo_image, launcher_binary, tempdir,
};

const NODE: &str = "kv-memsnap";
/// What the demo guest prints when it boots (`BANNER`).
const BANNER: &str = "kubevirt-rs demo guest";

/// The running VMI of `vm`: its uid and its launcher's run directory.
fn running_vmi(up: &Up, data: &Path, vm: &str, not_uid: Option<&str>) -> (String, PathBuf) {
    let vmi = eventually(&format!("VM {vm}'s instance Running"), 300, || {
        up.get("vmi", vm).filter(|v| {
            v["status"]["phase"] == "Running" && v["metadata"]["uid"].as_str() != not_uid
        })
    });
    let uid = vmi["metadata"]["uid"].as_str().unwrap().to_string();
    let dir = data.join("node/launchers").join(&uid);
    (uid, dir)
}

/// Runs the guest's `count` once and returns what it answered (only what the console says
/// after the command is read: a new console client is first given the scroll-back).
fn count(dir: &Path) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(dir.join("console.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 65536];
    // The scroll-back, until the console is quiet.
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    s.write_all(b"count\r").unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(n) = s.read(&mut buf) {
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        if let Some(after) = text.split("count ").nth(1)
            && let Some(end) = after.find(|c: char| !c.is_ascii_digit())
            && end > 0
        {
            return after[..end].parse().unwrap();
        }
    }
    panic!("the guest did not answer count: {text:?}")
}

fn set_strategy(up: &Up, vm: &str, strategy: &str) {
    let patch = format!(r#"{{"spec":{{"runStrategy":"{strategy}"}}}}"#);
    up.ok(&["patch", "vm", vm, "--type=merge", "-p", &patch], None);
}

fn stop(up: &Up, vm: &str) {
    set_strategy(up, vm, "Halted");
    eventually(&format!("VM {vm} stopped"), 120, || {
        up.get("vmi", vm).is_none().then_some(())
    });
}

fn snapshot_yaml(name: &str, vm: &str) -> String {
    format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\nmetadata:\n  name: {name}\n  annotations: {{snapshot.kubevirt-rs.io/memory: \"true\"}}\nspec:\n  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {vm}}}\n"
    )
}

fn indications(snap: &serde_json::Value) -> Vec<String> {
    snap["status"]["indications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_memory_snapshot_restore_resumes_the_guest_where_it_was() {
    require_node!();
    let _node = node_slot();
    let launcher = launcher_binary(Profile::Debug);
    controller_binary(Profile::Debug);
    let dir = tempdir("memsnap");
    let data = dir.join("data");
    let (up, _ready) = start_up_node(&data, NODE, &["--launcher", launcher.to_str().unwrap()]);

    let image = demo_image(&dir);
    let vm = DemoVm::new("memvm", &image).data_volume("{blank: {}}", "32Mi");
    up.ok(&["apply", "-f", "-"], Some(&vm.yaml()));
    let (first_uid, run) = running_vmi(&up, &data, "memvm", None);
    eventually("the guest's shell answers", 60, || {
        console_answer(&run.join("console.sock"), "help", "commands:")
    });
    for want in 1..=3 {
        assert_eq!(count(&run), want, "the guest counts in its memory");
    }

    // The online snapshot with the memory opt-in.
    let started = Instant::now();
    up.ok(
        &["apply", "-f", "-"],
        Some(&snapshot_yaml("memsnap1", "memvm")),
    );
    let snap = eventually("the memory snapshot Succeeded", 120, || {
        up.get("vmsnapshot", "memsnap1")
            .filter(|s| s["status"]["phase"] == "Succeeded" && s["status"]["readyToUse"] == true)
    });
    eprintln!(
        "online snapshot with memory ready in {:?}",
        started.elapsed()
    );
    assert_eq!(
        indications(&snap),
        ["NoGuestAgent", "Online", "MemoryState"],
        "{snap}"
    );
    let content_name = snap["status"]["virtualMachineSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let content = up.get("vmsnapshotcontent", &content_name).unwrap();
    let state: serde_json::Value = serde_json::from_str(
        content["metadata"]["annotations"]["snapshot.kubevirt-rs.io/memory-state"]
            .as_str()
            .expect("the content records the memory state"),
    )
    .unwrap();
    assert_eq!(state["node"], NODE, "{state}");
    assert_eq!(state["vmiUid"], first_uid.as_str(), "{state}");
    let stored = data
        .join("node/launchers/.memory-snapshots/default")
        .join(&content_name);
    assert!(stored.join("vmstate").is_file() && stored.join("memory").is_file());
    // The guest runs on after the snapshot (unpaused), its counter going on.
    eventually("the VMI unpaused", 30, || {
        up.get("vmi", "memvm")
            .filter(|v| condition(v, "Paused").is_null())
    });
    assert_eq!(count(&run), 4);
    assert_eq!(count(&run), 5);

    // Stop, restore, start: the guest resumes at the snapshot's 3.
    stop(&up, "memvm");
    let restore = "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineRestore\nmetadata: {name: memrestore1}\nspec:\n  target: {apiGroup: kubevirt.io, kind: VirtualMachine, name: memvm}\n  virtualMachineSnapshotName: memsnap1\n";
    up.ok(&["apply", "-f", "-"], Some(restore));
    eventually("the restore complete", 180, || {
        up.get("vmrestore", "memrestore1")
            .filter(|r| r["status"]["complete"] == true)
    });
    let marked = up.get("vm", "memvm").unwrap();
    let marker = &marked["metadata"]["annotations"]["snapshot.kubevirt-rs.io/resume-memory"];
    assert!(marker.is_string(), "the VM is marked to resume: {marked}");
    let started = Instant::now();
    set_strategy(&up, "memvm", "Always");
    let (second_uid, run) = running_vmi(&up, &data, "memvm", Some(&first_uid));
    eprintln!("restored VM started to Running in {:?}", started.elapsed());
    assert_eq!(count(&run), 4, "the guest continues from the snapshot's 3");
    let log = std::fs::read_to_string(run.join("console.log")).unwrap();
    assert!(
        !log.contains(BANNER),
        "the resumed guest booted again:\n{log}"
    );
    let vmi = up.get("vmi", "memvm").unwrap();
    assert_eq!(vmi["metadata"]["uid"], second_uid.as_str());
    assert_eq!(
        vmi["metadata"]["annotations"]["snapshot.kubevirt-rs.io/resume-memory"], *marker,
        "the instance says what it resumed: {vmi}"
    );
    let vm_after = up.get("vm", "memvm").unwrap();
    assert!(
        vm_after["metadata"]["annotations"]["snapshot.kubevirt-rs.io/resume-memory"].is_null(),
        "one-shot: the next start boots: {vm_after}"
    );

    // The opt-in on a stopped VM: its volumes only, said so, not Failed.
    stop(&up, "memvm");
    up.ok(
        &["apply", "-f", "-"],
        Some(&snapshot_yaml("memsnap2", "memvm")),
    );
    let offline = eventually("the offline snapshot Succeeded", 120, || {
        up.get("vmsnapshot", "memsnap2")
            .filter(|s| s["status"]["phase"] == "Succeeded")
    });
    assert_eq!(indications(&offline), ["NoMemoryState"], "{offline}");
    let offline_content = offline["status"]["virtualMachineSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let c2 = up.get("vmsnapshotcontent", &offline_content).unwrap();
    assert!(
        c2["metadata"]["annotations"]["snapshot.kubevirt-rs.io/memory-state"].is_null(),
        "{c2}"
    );

    // Deleting the snapshot deletes its content, and the node agent its memory state.
    up.ok(&["delete", "vmsnapshot", "memsnap1", "--wait=true"], None);
    eventually("the stored memory state removed", 120, || {
        (!stored.exists()).then_some(())
    });

    up.ok(&["delete", "vmsnapshot", "--all", "--wait=true"], None);
    up.ok(&["delete", "vm", "--all", "--wait=true"], None);
    up.ok(&["delete", "vmrestore", "--all", "--wait=true"], None);
    up.ok(&["delete", "pvc", "--all", "--wait=true"], None);
    eventually("every volume deleted", 120, || {
        let pvs = up.ok(&["get", "pv", "-o", "name"], None);
        pvs.trim().is_empty().then_some(())
    });
    drop(up);
    assert_nothing_left(&data);
}
