//! Issue 12's `migrate`, end to end as a user drives it on `kubevirt-local up` with its kubelet:
//! `virtctl migrate demo` creates a VirtualMachineInstanceMigration; the migration controller
//! makes the target virt-launcher pod (on this one node: the plane allows a target beside its
//! source), the node agent starts it as a migration target and relays the source launcher's
//! stream to it; the guest goes on counting in the new pod (no second boot) with the same VMI,
//! `kubectl get vmim` says Succeeded and the VMI's `migrationState` says where it went. A second
//! migration moves it on from the first one's target, whose pod then ends Succeeded (its
//! `guest-console-log` ends with its launcher). Refusals are upstream's words.
//!
//! Cancel: with the cluster's `bandwidthPerMigration` at 1Mi and 24 MiB of never-zero guest
//! RAM the migration stays in flight for some 24 s on any machine; `virtctl migrate-cancel`
//! deletes its VMIM, which stays (upstream's finalizer) until the source's launcher cancelled:
//! the VMI says `abortStatus: Succeeded`, the target pod goes, and the guest goes on counting
//! in its source pod without a second boot. A second migration waiting in Pending meanwhile is
//! simply removed by `kubectl delete vmim`.

mod common;

use std::path::{Path, PathBuf};

use common::node::*;
use kubevirt_testsupport::{
    Profile, demo_image, demo_image_with_ballast, launcher_binary, tempdir,
};
use serde_json::Value;

const NODE: &str = "kv-migration";
const CANCEL_NODE: &str = "kv-migration-cancel";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn vmi(up: &Up) -> Value {
    up.get("vmi", "demo").expect("the VMI")
}

/// The console socket of the launcher that runs the guest now (its pod's run directory).
fn console(data: &Path, run_dir: &str) -> PathBuf {
    data.join("node/launchers")
        .join(run_dir)
        .join("console.sock")
}

/// Types `count` on the console until the guest answers with a count above `above`; returns
/// the highest count it shows (the console may replay earlier output, and a keystroke typed
/// before the guest's prompt may count too). A guest that booted again would count from 1.
fn count(socket: &Path, above: u32) -> u32 {
    eventually("the guest counts on its console", 60, || {
        let text = console_answer(socket, "count", "count ")?;
        let highest = text
            .split("count ")
            .skip(1)
            .filter_map(|s| {
                let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
                digits.parse::<u32>().ok()
            })
            .max()?;
        (highest > above).then_some(highest)
    })
}

/// Migrates the demo VM and waits for its migration to succeed; returns the migration object.
fn migrate(up: &Up) -> Value {
    let out = up.virtctl(&["migrate", "demo"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.trim(), "VM demo was scheduled to migrate");
    eventually("the migration Succeeded", 180, || {
        let list: Value =
            serde_json::from_str(&up.ok(&["get", "vmim", "-o", "json"], None)).ok()?;
        let items = list["items"].as_array()?.clone();
        let newest = items.into_iter().max_by_key(|m| {
            m["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })?;
        let phase = newest["status"]["phase"].as_str().unwrap_or("");
        assert_ne!(phase, "Failed", "the migration failed: {newest:#}");
        (phase == "Succeeded").then_some(newest)
    })
}

#[test]
fn virtctl_migrate_moves_the_running_guest_to_a_new_launcher_pod() {
    require_node!();
    let _node = node_slot();
    let launcher = launcher_binary(Profile::Debug);
    let dir = tempdir("live-migration");
    let data = dir.join("data");
    let image = demo_image(&dir);
    let args = ["--launcher", launcher.to_str().unwrap()];
    let (up, ready) = start_up_node(&data, NODE, &args);
    assert_eq!(ready["vmiLaunchers"], "pods", "{ready}");

    // Refused as upstream refuses: no such VM, a VM that does not run.
    let out = up.virtctl(&["migrate", "nosuchvm"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("virtualmachine.kubevirt.io \"nosuchvm\" not found"),
        "{err}"
    );
    let vm = std::fs::read_to_string(root().join("examples/vm-demo.yaml"))
        .expect("the example")
        .replace("oci:target/demo-image:demo", &image);
    let halted = vm.replace("runStrategy: Always", "runStrategy: Halted");
    up.ok(&["apply", "-f", "-"], Some(&halted));
    let out = up.virtctl(&["migrate", "demo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("VM is not running"),
        "{err}"
    );

    up.ok(&["apply", "-f", "-"], Some(&vm));
    let running = eventually("the VMI Running", 180, || {
        Some(vmi(&up)).filter(|v| v["status"]["phase"] == "Running")
    });
    let vmi_uid = running["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let first = count(&console(&data, &vmi_uid), 0);
    let second = count(&console(&data, &vmi_uid), first);
    // The guest writes its emptyDisk (a disk that lives with the pod): it must move with it.
    let wrote = eventually("the guest wrote its scratch disk", 60, || {
        console_answer(&console(&data, &vmi_uid), "disktest", "read it back: ok")
    });
    let letter = wrote
        .split("vd")
        .nth(1)
        .and_then(|s| s.chars().next())
        .expect("the disk the guest wrote");
    let marker = format!("kubevirt-rs demo guest wrote this to vd{letter}\n");

    // The dry run creates nothing.
    let out = up.virtctl(&["migrate", "demo", "--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        up.ok(&["get", "vmim", "-o", "name"], None)
            .trim()
            .is_empty()
    );

    let done = migrate(&up);
    let migration_uid = done["metadata"]["uid"].as_str().expect("uid").to_string();
    let state = &done["status"]["migrationState"];
    assert_eq!(state["completed"], true, "{done:#}");
    assert_eq!(state["targetNode"], NODE);
    assert_ne!(state["sourcePod"], state["targetPod"]);
    let phases: Vec<&str> = done["status"]["phaseTransitionTimestamps"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter_map(|t| t["phase"].as_str())
        .collect();
    assert_eq!(phases.first(), Some(&"Scheduling"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"Succeeded"), "{phases:?}");

    // The same VMI runs on, in the target pod, counting on from where it was: no second boot.
    let moved = eventually("the VMI Running on the target", 60, || {
        let v = vmi(&up);
        let domain = v["status"]["migrationState"]["targetNodeDomainDetected"] == true;
        (v["status"]["phase"] == "Running" && domain).then_some(v)
    });
    assert_eq!(moved["metadata"]["uid"], vmi_uid.as_str());
    assert_eq!(moved["status"]["nodeName"], NODE);
    // A guest that booted again would count from 1.
    let third = count(&console(&data, &migration_uid), second);
    let scratch = data
        .join("node/launchers")
        .join(&migration_uid)
        .join("ephemeral/empty-disks/scratch.img");
    let bytes = std::fs::read(&scratch).unwrap_or_else(|e| panic!("{}: {e}", scratch.display()));
    assert_eq!(
        bytes.get(512..512 + marker.len()),
        Some(marker.as_bytes()),
        "the target's emptyDisk holds what the guest wrote on the source"
    );
    let target_pod = state["targetPod"].as_str().expect("target pod").to_string();
    let pod = up.pod(&target_pod).expect("the target pod");
    assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
    let source_pod = state["sourcePod"].as_str().expect("source pod");
    eventually("the source pod gone or done", 60, || {
        match up.pod(source_pod) {
            None => Some(()),
            Some(p) => (p["status"]["phase"] == "Succeeded").then_some(()),
        }
    });
    // The story in `kubectl get events`, with upstream's reasons.
    eventually("the migration's events", 30, || {
        let list: Value =
            serde_json::from_str(&up.ok(&["get", "events", "-o", "json"], None)).ok()?;
        let seen = |kind: &str, reason: &str, message: &str| {
            list["items"].as_array().into_iter().flatten().any(|e| {
                e["involvedObject"]["kind"] == kind
                    && e["reason"] == reason
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(message))
            })
        };
        (seen(
            "VirtualMachineInstance",
            "Migrating",
            "VirtualMachineInstance is migrating.",
        ) && seen(
            "VirtualMachineInstance",
            "Migrated",
            &format!("The VirtualMachineInstance migrated to node {NODE}."),
        ) && seen(
            "VirtualMachineInstanceMigration",
            "SuccessfulCreate",
            "Created migration target pod virt-launcher-demo-",
        ) && seen(
            "VirtualMachineInstanceMigration",
            "SuccessfulMigration",
            "Source node reported migration succeeded",
        ))
        .then_some(())
    });
    // The subresource API reaches the guest where it runs now.
    let out = up.virtctl(&["pause", "vmi", "demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the VMI Paused", 30, || {
        (condition(&vmi(&up), "Paused")["status"] == "True").then_some(())
    });
    let out = up.virtctl(&["unpause", "vmi", "demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A second migration moves it on from the first one's target.
    let again = migrate(&up);
    let second_uid = again["metadata"]["uid"].as_str().expect("uid").to_string();
    assert_eq!(
        again["status"]["migrationState"]["sourcePod"],
        target_pod.as_str()
    );
    eventually("the VMI taken over again", 60, || {
        let v = vmi(&up);
        (v["status"]["migrationState"]["migrationUid"] == second_uid.as_str()
            && v["status"]["migrationState"]["targetNodeDomainDetected"] == true)
            .then_some(())
    });
    count(&console(&data, &second_uid), third);
    // Its source pod (the first one's target) ends as upstream's does: its launcher handed the
    // guest over and exited 0, its guest-console-log ended with it, so the pod is Succeeded
    // (Completed), every container terminated with 0, and stays until the VM goes.
    let ended = eventually("the second migration's source pod Succeeded", 60, || {
        up.pod(&target_pod)
            .filter(|p| p["status"]["phase"] == "Succeeded")
    });
    let containers = ended["status"]["containerStatuses"]
        .as_array()
        .expect("container statuses");
    assert_eq!(containers.len(), 2, "{ended:#}");
    for c in containers {
        assert_eq!(c["state"]["terminated"]["exitCode"], 0, "{c:#}");
    }

    // Deleting the VM: the guest shuts down, its pods go, nothing is left.
    delete_vm_leaving_nothing(up, &data);
}

/// Deletes the demo VM: the guest shuts down, its pods go, nothing is left on the host.
fn delete_vm_leaving_nothing(up: Up, data: &std::path::Path) {
    up.ok(
        &["delete", "vm", "demo", "--wait=true", "--timeout=120s"],
        None,
    );
    launcher_pods_gone(&up, 120);
    assert_nothing_left(data);
    drop(up);
}

/// The VMIMs of the demo VM (by upstream's label), as JSON.
fn vmims(up: &Up) -> Vec<Value> {
    up.list("vmim", "kubevirt.io/vmi-name=demo")
}

#[test]
fn virtctl_migrate_cancel_aborts_a_migration_in_flight_and_the_guest_runs_on_in_its_source() {
    require_node!();
    let _node = node_slot();
    let launcher = launcher_binary(Profile::Debug);
    let dir = tempdir("migration-cancel");
    let data = dir.join("data");
    let image = demo_image_with_ballast(&dir, 24 << 20);
    let args = ["--launcher", launcher.to_str().unwrap()];
    let (up, ready) = start_up_node(&data, CANCEL_NODE, &args);
    assert_eq!(ready["vmiLaunchers"], "pods", "{ready}");

    // Bad input is answered clearly and changes nothing.
    let out = up.virtctl(&["migrate-cancel", "nosuchvm"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Found no migration to cancel for nosuchvm")
            && err.contains("virtualmachine.kubevirt.io \"nosuchvm\" not found"),
        "{err}"
    );

    // Migrations at 1 MiB/s (upstream's bandwidthPerMigration), a guest with 24 MiB to copy.
    up.ok(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: kubevirt}\n"),
    );
    up.ok(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata: {name: kubevirt, namespace: kubevirt}\nspec:\n  configuration:\n    migrations: {bandwidthPerMigration: 1Mi}\n",
        ),
    );
    let vm = std::fs::read_to_string(root().join("examples/vm-demo.yaml"))
        .expect("the example")
        .replace("oci:target/demo-image:demo", &image)
        .replace(
            "kernelPath: /boot/demo.elf",
            "kernelPath: /boot/demo.elf\n              initrdPath: /boot/ballast.img",
        );
    up.ok(&["apply", "-f", "-"], Some(&vm));
    let running = eventually("the VMI Running", 180, || {
        Some(vmi(&up)).filter(|v| v["status"]["phase"] == "Running")
    });
    let vmi_uid = running["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let source_pod = running["status"]["activePods"]
        .as_object()
        .and_then(|p| p.keys().next().cloned());
    let first = count(&console(&data, &vmi_uid), 0);

    // Nothing to cancel yet.
    let out = up.virtctl(&["migrate-cancel", "demo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Found no migration to cancel for demo"),
        "{err}"
    );
    assert!(!err.contains("not found"), "{err}");

    let out = up.virtctl(&["migrate", "demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In flight: the source's launcher was sent `migrate` (startTimestamp) and is copying.
    let flying = eventually("the migration Running", 120, || {
        let m = vmims(&up).into_iter().next()?;
        let phase = m["status"]["phase"].as_str().unwrap_or("").to_string();
        assert!(
            !matches!(phase.as_str(), "Succeeded" | "Failed"),
            "the migration ended before it was cancelled: {m:#}"
        );
        (phase == "Running").then_some(m)
    });
    assert_eq!(
        flying["metadata"]["finalizers"],
        serde_json::json!(["kubevirt.io/migrationJobFinalize"]),
        "{flying:#}"
    );
    let name = flying["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let migration_uid = flying["metadata"]["uid"].as_str().expect("uid").to_string();
    let state = vmi(&up)["status"]["migrationState"].clone();
    assert_eq!(
        state["migrationConfiguration"]["bandwidthPerMigration"], "1Mi",
        "{state:#}"
    );
    let target_pod = state["targetPod"].as_str().expect("target pod").to_string();
    assert!(up.pod(&target_pod).is_some());

    // A second migration of the VMI waits (one at a time) in Pending; `kubectl delete` of it
    // removes it at once and leaves the one in flight alone.
    let waiting = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstanceMigration\nmetadata: {name: waiting}\nspec: {vmiName: demo}\n";
    up.ok(&["create", "-f", "-"], Some(waiting));
    let pending = eventually("the second migration claimed, Pending", 30, || {
        let m = up.get("vmim", "waiting")?;
        let claimed = m["metadata"]["finalizers"]
            == serde_json::json!(["kubevirt.io/migrationJobFinalize"])
            && m["metadata"]["labels"]["kubevirt.io/vmi-name"] == "demo";
        (claimed && m["status"]["phase"] == "Pending").then_some(m)
    });
    assert!(pending["status"]["migrationState"].is_null(), "{pending:#}");
    up.ok(
        &["delete", "vmim", "waiting", "--wait=true", "--timeout=60s"],
        None,
    );
    assert!(up.get("vmim", "waiting").is_none());
    let still = up.get("vmim", &name).expect("the migration in flight");
    assert_eq!(still["status"]["phase"], "Running", "{still:#}");

    let out = up.virtctl(&["migrate-cancel", "demo"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.trim(), "VM demo was scheduled to migrate-cancel");

    // Settled: the VMI says the abort succeeded, then the VMIM goes with its target pod.
    let settled = eventually("the abort settled on the VMI", 60, || {
        let m = vmi(&up)["status"]["migrationState"].clone();
        (m["migrationUid"] == migration_uid.as_str() && m["abortStatus"] == "Succeeded")
            .then_some(m)
    });
    assert_eq!(settled["abortRequested"], true, "{settled:#}");
    assert_eq!(settled["failed"], true, "{settled:#}");
    assert!(settled["targetNodeDomainDetected"] != true, "{settled:#}");
    eventually("the VMIM gone", 60, || {
        up.get("vmim", &name).is_none().then_some(())
    });
    eventually("the target pod gone", 120, || {
        up.pod(&target_pod).is_none().then_some(())
    });

    // The guest runs on in its source pod, counting on: no second boot, no move.
    let after = eventually("the source pod the VMI's only pod", 60, || {
        let v = vmi(&up);
        let pods = v["status"]["activePods"].as_object()?;
        (pods.len() == 1 && pods.keys().next() == source_pod.as_ref()).then_some(v)
    });
    assert_eq!(after["status"]["phase"], "Running", "{after:#}");
    assert_eq!(after["metadata"]["uid"], vmi_uid.as_str());
    let later = count(&console(&data, &vmi_uid), first);
    assert!(later > first);
    assert!(
        !data.join("node/launchers").join(&migration_uid).exists(),
        "the target's run directory is gone"
    );

    // Upstream's events: the source's agent aborting, the migration failing.
    eventually("the cancel's events", 30, || {
        let list: Value =
            serde_json::from_str(&up.ok(&["get", "events", "-o", "json"], None)).ok()?;
        let seen = |kind: &str, reason: &str, message: &str| {
            list["items"].as_array().into_iter().flatten().any(|e| {
                e["involvedObject"]["kind"] == kind
                    && e["reason"] == reason
                    && e["message"].as_str().is_some_and(|m| m.contains(message))
            })
        };
        (seen(
            "VirtualMachineInstance",
            "Migrating",
            "VirtualMachineInstance is aborting migration.",
        ) && seen(
            "VirtualMachineInstanceMigration",
            "FailedMigration",
            "cancelled",
        ))
        .then_some(())
    });

    // The source launcher still reports the cancelled migration (Failed): the next migration
    // is not that one, and moves the guest (the agent took the old status for the next
    // migration's outcome, and every later migration of the VM failed at once).
    let moved = migrate(&up);
    assert_ne!(moved["metadata"]["uid"], migration_uid.as_str());

    delete_vm_leaving_nothing(up, &data);
}
