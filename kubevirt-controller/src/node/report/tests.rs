use super::*;
use kubevirt_launcher_protocol::{GuestInfo, GuestInterface};

fn now() -> Timestamp {
    "2026-11-28T12:00:00Z".parse().unwrap()
}

fn vmi(status: Value, labelled: bool) -> VirtualMachineInstance {
    let mut meta = json!({"name": "v", "namespace": "default"});
    if labelled {
        meta["labels"] = json!({NODE_NAME_LABEL: "node-a"});
    }
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": meta,
        "spec": {"domain": {"devices": {}}}, "status": status,
    }))
    .unwrap()
}

fn running(paused: bool, ip: Option<&str>) -> Report {
    Report::Status(Box::new(Status {
        phase: Phase::Running,
        paused,
        guest: GuestInfo {
            interfaces: vec![GuestInterface {
                name: "default".into(),
                mac: "02:00:00:00:00:01".into(),
                guest_ip: ip.map(str::to_string),
                binding: "masquerade".into(),
            }],
            ..GuestInfo::default()
        },
        ..Status::default()
    }))
}

/// Applies a merge patch's status to the VMI, as the API server would.
fn applied(v: &VirtualMachineInstance, p: &Value) -> VirtualMachineInstance {
    let mut doc = serde_json::to_value(v).unwrap();
    json_merge(&mut doc, p);
    serde_json::from_value(doc).unwrap()
}

fn json_merge(doc: &mut Value, patch: &Value) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    d.remove(k);
                } else {
                    json_merge(d.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (d, p) => *d = p.clone(),
    }
}

#[test]
fn a_launching_vmi_is_scheduled_on_the_node_and_labelled() {
    let p = patch(&vmi(json!({}), false), "node-a", &Report::Launching, now()).unwrap();
    assert_eq!(p["status"]["phase"], "Scheduled");
    assert_eq!(p["status"]["nodeName"], "node-a");
    assert_eq!(p["metadata"]["labels"][NODE_NAME_LABEL], "node-a");
    assert_eq!(
        p["status"]["phaseTransitionTimestamps"][0]["phase"],
        "Scheduled"
    );
}

#[test]
fn running_is_ready_with_the_guest_address_and_paused_is_not() {
    let v = vmi(json!({"phase": "Scheduled"}), true);
    let p = patch(&v, "node-a", &running(false, Some("10.0.2.2")), now()).unwrap();
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(p["status"]["conditions"][0]["status"], "True");
    assert_eq!(p["status"]["interfaces"][0]["ipAddress"], "10.0.2.2");
    assert_eq!(p["status"]["interfaces"][0]["mac"], "02:00:00:00:00:01");
    let v = applied(&v, &p);
    // Nothing new: nothing to write.
    assert_eq!(
        patch(&v, "node-a", &running(false, Some("10.0.2.2")), now()),
        None
    );
    let p = patch(&v, "node-a", &running(true, Some("10.0.2.2")), now()).unwrap();
    assert_eq!(p["status"]["conditions"][0]["status"], "False");
    assert_eq!(p["status"]["conditions"][1]["type"], "Paused");
    assert_eq!(p["status"]["conditions"][1]["reason"], "PausedByUser");
    assert_eq!(
        p["status"]["conditions"][1]["message"],
        "VMI was paused by user"
    );
    assert_eq!(io_error_event(&v, &running(true, None)), None);
    // Paused by a disk's error policy: upstream's reason and message (the event names the disk).
    let full = io_paused("disk data: No space left on device (os error 28)");
    let io = patch(&v, "node-a", &full, now()).unwrap();
    let c = &io["status"]["conditions"][1];
    assert_eq!(c["reason"], "PausedIOError", "{c}");
    assert_eq!(c["message"], "VMI was paused, low-level IO error detected");
    // The phase did not change: no new transition (the one for Running stays the only one).
    let transitions = p["status"]["phaseTransitionTimestamps"].as_array().unwrap();
    assert_eq!(transitions.len(), 1);
    assert_eq!(transitions[0]["phase"], "Running");
}

/// Running, paused by a disk's error policy for `error`.
fn io_paused(error: &str) -> Report {
    let mut r = running(true, Some("10.0.2.2"));
    if let Report::Status(s) = &mut r {
        s.io_error = Some(error.into());
    }
    r
}

#[test]
fn a_pause_for_a_disk_error_is_told_once_as_upstreams_ioerror_event_naming_the_volume() {
    let v = vmi(json!({"phase": "Running"}), true);
    let full = io_paused("disk data: No space left on device (os error 28)");
    let note = io_error_event(&v, &full).expect("an event");
    assert_eq!(
        (note.type_, note.reason),
        (crate::events::EventType::Warning, "IOerror")
    );
    assert_eq!(
        note.message,
        "VM Paused due to not enough space on volume: data"
    );
    let other = io_error_event(&v, &io_paused("disk root: Input/output error (os error 5)"));
    assert_eq!(
        other.expect("an event").message,
        "VM Paused due to IO error at the volume: root"
    );
    // Once the VMI shows the condition, the same report tells nothing new.
    let shown = applied(&v, &patch(&v, "node-a", &full, now()).unwrap());
    assert_eq!(io_error_event(&shown, &full), None);
    // A guest that is not paused, or paused by its user, has no disk error to tell.
    let mut unpaused = full.clone();
    if let Report::Status(s) = &mut unpaused {
        s.paused = false;
    }
    assert_eq!(io_error_event(&v, &unpaused), None);
    assert_eq!(io_error_event(&v, &Report::Launching), None);
    // Unpaused and paused again by a second error: told again.
    let resumed = applied(
        &shown,
        &patch(&shown, "node-a", &running(false, Some("10.0.2.2")), now()).unwrap(),
    );
    assert!(io_error_event(&resumed, &full).is_some());
}

fn exited(code: Option<i32>, last: Option<(ExitStatus, &str)>) -> Report {
    Report::Exited {
        code,
        last: last.map(|(e, why)| FinalStatus::new(e, Some(why.into()))),
    }
}

#[test]
fn exits_map_to_final_phases_with_the_launchers_reasons() {
    let v = vmi(json!({"phase": "Running"}), true);
    let ok = patch(&v, "node-a", &exited(Some(0), None), now()).unwrap();
    assert_eq!(ok["status"]["phase"], "Succeeded");
    // An invalid document: the reason is the launcher's own, with the field path.
    let bad = exited(
        Some(2),
        Some((
            ExitStatus::Invalid,
            "spec.domain.devices.disks[0].disk.bus: sata is not supported",
        )),
    );
    let p = patch(&v, "node-a", &bad, now()).unwrap();
    assert_eq!(p["status"]["phase"], "Failed");
    let reason = p["status"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("refused the VMI") && reason.contains("disks[0].disk.bus"),
        "{reason}"
    );
    // A launch failure and a guest failure read differently.
    let launch = exited(Some(3), Some((ExitStatus::LaunchFailed, "pulling x: 404")));
    let reason = patch(&v, "node-a", &launch, now()).unwrap()["status"]["reason"].clone();
    assert!(
        reason.as_str().unwrap().starts_with("the launch failed"),
        "{reason}"
    );
    // No final status: the exit code still tells which.
    let reason =
        patch(&v, "node-a", &exited(Some(1), None), now()).unwrap()["status"]["reason"].clone();
    assert_eq!(reason, "the guest or the VMM failed");
    let lost = patch(&v, "node-a", &Report::Lost, now()).unwrap();
    assert_eq!(lost["status"]["phase"], "Failed");
    let killed = patch(&v, "node-a", &exited(None, None), now()).unwrap();
    assert!(
        killed["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("killed")
    );
}

#[test]
fn a_launcher_speaking_another_protocol_is_a_failure_not_a_guess() {
    let other =
        Report::Incompatible("the launcher speaks protocol version 2, this side speaks 1".into());
    let p = patch(&vmi(json!({}), true), "node-a", &other, now()).unwrap();
    assert_eq!(p["status"]["phase"], "Failed");
    assert!(
        p["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("protocol version 2")
    );
}

#[test]
fn a_launcher_waiting_in_its_pod_keeps_the_vmi_scheduled() {
    let waiting = Report::Status(Box::new(Status {
        phase: Phase::Waiting,
        ..Status::default()
    }));
    let scheduled = vmi(json!({"phase": "Scheduled", "nodeName": "node-a"}), true);
    let p = patch(&scheduled, "node-a", &waiting, now()).unwrap();
    assert_eq!(p["status"]["phase"], "Scheduled");
    assert_eq!(p["status"]["conditions"][0]["status"], "False");
    // Applied once, nothing more to write while it waits.
    let after = applied(&scheduled, &p);
    assert_eq!(patch(&after, "node-a", &waiting, now()), None);
}

#[test]
fn a_launcher_that_could_not_be_started_fails_the_vmi_with_why() {
    let why = "preparing the pod network failed: nft: no such table";
    let v = vmi(json!({"phase": "Scheduled", "nodeName": "node-a"}), true);
    let p = patch(&v, "node-a", &Report::StartFailed(why.into()), now()).unwrap();
    assert_eq!(p["status"]["phase"], "Failed");
    assert_eq!(p["status"]["reason"], why);
}

#[test]
fn a_launcher_that_handed_its_guest_over_is_no_outcome_whether_exited_or_finishing() {
    // Exited so: its final status says Migrated (its serve exit code is 0).
    assert!(exited(Some(0), Some((ExitStatus::Migrated, "the VM was migrated"))).handed_over());
    // Still finishing (it lets the target's go-ahead out, drains the console): its VM ended,
    // its own phase is Succeeded, and that is not the VMI's (the flake that failed migrations
    // with "not running (phase none)": the VMI was marked Succeeded and restarted).
    let finishing = Report::Status(Box::new(Status {
        phase: Phase::Succeeded,
        reason: Some("the VM was migrated".into()),
        migrated_away: true,
        ..Status::default()
    }));
    assert!(finishing.handed_over());
    // Anything else is the VMI's own outcome.
    let powered_off = Report::Status(Box::new(Status {
        phase: Phase::Succeeded,
        ..Status::default()
    }));
    assert!(!powered_off.handed_over());
    assert!(!running(false, None).handed_over());
    assert!(!exited(Some(0), Some((ExitStatus::Succeeded, ""))).handed_over());
    assert!(!exited(None, None).handed_over());
    assert!(!Report::Lost.handed_over());
}
