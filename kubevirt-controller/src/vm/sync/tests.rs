use serde_json::{Value, json};

use super::*;
use kubevirt_api::cdi::v1beta1::DataVolume;

const NOW: &str = "2026-11-28T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn vm(spec: Value, status: Value) -> VirtualMachine {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"domain": {"devices": {}}}});
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "v", "namespace": "ns", "uid": "vm-uid", "generation": 2},
        "spec": spec, "status": status,
    }))
    .unwrap()
}

fn vmi(phase: &str, uid: &str, ran: bool) -> VirtualMachineInstance {
    let mut transitions = vec![];
    if ran {
        transitions.push(json!({"phase": "Running", "phaseTransitionTimestamp": NOW}));
    }
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "v", "namespace": "ns", "uid": uid},
        "spec": {"domain": {"devices": {}}},
        "status": {"phase": phase, "phaseTransitionTimestamps": transitions,
                   "conditions": [{"type": "Ready", "status": if phase == "Running" {"True"} else {"False"}}]},
    }))
    .unwrap()
}

fn run(vm: &VirtualMachine, vmi: Option<&VirtualMachineInstance>) -> Plan {
    plan(Observed {
        vm,
        vmi,
        now: now(),
        jitter: 0.0,
        storage: &Storage::default(),
    })
}

fn delete(uid: &str) -> Action {
    Action::Delete { uid: uid.into() }
}

const CREATE: Action = Action::Create { paused: false };

#[test]
fn always_starts_an_absent_instance_and_replaces_a_finished_one() {
    let v = vm(json!({"runStrategy": "Always"}), json!({}));
    let p = run(&v, None);
    assert_eq!(p.action, CREATE);
    assert_eq!(p.status.printable_status.as_deref(), Some("Starting"));
    assert_eq!(p.status.created, Some(false));
    let running = vmi("Running", "a", true);
    let p = run(&v, Some(&running));
    assert_eq!(p.action, Action::None);
    assert_eq!(p.status.printable_status.as_deref(), Some("Running"));
    assert_eq!((p.status.created, p.status.ready), (Some(true), Some(true)));
    assert_eq!(
        run(&v, Some(&vmi("Succeeded", "a", true))).action,
        delete("a")
    );
    assert_eq!(run(&v, Some(&vmi("Failed", "a", true))).action, delete("a"));
}

#[test]
fn running_true_and_false_are_always_and_halted() {
    let on = vm(json!({"running": true}), json!({}));
    assert_eq!(run(&on, None).action, CREATE);
    let off = vm(json!({"running": false}), json!({}));
    let p = run(&off, None);
    assert_eq!(p.action, Action::None);
    assert_eq!(p.status.printable_status.as_deref(), Some("Stopped"));
    assert_eq!(
        run(&off, Some(&vmi("Running", "a", true))).action,
        delete("a")
    );
    assert_eq!(
        run(&off, Some(&vmi("Running", "a", true)))
            .status
            .printable_status
            .as_deref(),
        Some("Stopping")
    );
}

#[test]
fn a_failed_start_backs_off_and_shows_crash_loop() {
    let v = vm(json!({"runStrategy": "Always"}), json!({}));
    // The instance failed without ever running: counted, and deleted.
    let mut failed = vmi("Failed", "a", false);
    failed.status.as_mut().unwrap().reason =
        Some("the launcher refused the VMI: no boot source".into());
    let p = run(&v, Some(&failed));
    assert_eq!(p.action, delete("a"));
    let failure = p.status.start_failure.clone().unwrap();
    assert_eq!(failure.consecutive_fail_count, Some(1));
    // Once gone, the next start waits for the backoff.
    let v2 = vm(
        json!({"runStrategy": "Always"}),
        serde_json::to_value(&p.status).unwrap(),
    );
    let p2 = run(&v2, None);
    assert_eq!(p2.action, Action::None);
    assert_eq!(
        p2.status.printable_status.as_deref(),
        Some("CrashLoopBackOff")
    );
    let at = p2.requeue_at.unwrap();
    assert_eq!(at.duration_since(now()).as_secs(), 10);
    // After it, the start happens.
    let later = plan(Observed {
        vm: &v2,
        vmi: None,
        now: at,
        jitter: 0.0,
        storage: &Storage::default(),
    });
    assert_eq!(later.action, CREATE);
    // Why it failed stays on the VM while it backs off.
    let why = p2
        .status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Failure")
        .cloned();
    let why = why.expect("a Failure condition while crash looping");
    assert_eq!(why.reason.as_deref(), Some("FailedStart"));
    assert!(
        why.message.unwrap().contains("boot"),
        "the failed VMI's reason"
    );
    // An instance that reaches Running clears the count.
    let v3 = vm(
        json!({"runStrategy": "Always"}),
        serde_json::to_value(&later.status).unwrap(),
    );
    assert_eq!(
        run(&v3, Some(&vmi("Running", "b", true)))
            .status
            .start_failure,
        None
    );
}

#[test]
fn rerun_on_failure_restarts_failures_but_not_shutdowns() {
    let fresh = vm(json!({"runStrategy": "RerunOnFailure"}), json!({}));
    assert_eq!(run(&fresh, None).action, CREATE);
    let seen = vm(
        json!({"runStrategy": "RerunOnFailure"}),
        json!({"runStrategy": "RerunOnFailure"}),
    );
    // Shut down by the guest: deleted, and not started again.
    assert_eq!(
        run(&seen, Some(&vmi("Succeeded", "a", true))).action,
        delete("a")
    );
    assert_eq!(run(&seen, None).action, Action::None);
    // Failed: deleted with a Start queued, which starts the next one.
    let p = run(&seen, Some(&vmi("Failed", "a", true)));
    assert_eq!(p.action, delete("a"));
    let queued = p.status.state_change_requests.clone().unwrap();
    assert_eq!(queued[0].action, "Start");
    let after = vm(
        json!({"runStrategy": "RerunOnFailure"}),
        serde_json::to_value(&p.status).unwrap(),
    );
    let p = run(&after, None);
    assert_eq!(p.action, CREATE);
    // Once the new instance lives, the request is done.
    let done = vm(
        json!({"runStrategy": "RerunOnFailure"}),
        serde_json::to_value(&p.status).unwrap(),
    );
    let p = run(&done, Some(&vmi("Running", "b", true)));
    assert_eq!(p.status.state_change_requests, None);
}

#[test]
fn manual_acts_only_on_requests_in_order() {
    let idle = vm(json!({"runStrategy": "Manual"}), json!({}));
    assert_eq!(run(&idle, None).action, Action::None);
    assert_eq!(
        run(&idle, Some(&vmi("Failed", "a", true))).action,
        Action::None
    );
    // virtctl restart: Stop{uid a} then Start.
    let restart = vm(
        json!({"runStrategy": "Manual"}),
        json!({"stateChangeRequests": [{"action": "Stop", "uid": "a"}, {"action": "Start"}]}),
    );
    assert_eq!(
        run(&restart, Some(&vmi("Running", "a", true))).action,
        delete("a")
    );
    let p = run(&restart, None);
    assert_eq!(p.action, CREATE);
    assert_eq!(p.status.state_change_requests.as_ref().unwrap().len(), 1);
    let p = run(&restart, Some(&vmi("Pending", "b", false)));
    assert_eq!(p.action, Action::None);
    assert_eq!(p.status.state_change_requests, None);
    // A start request asking for a paused start.
    let paused = vm(
        json!({"runStrategy": "Manual"}),
        json!({"stateChangeRequests": [{"action": "Start", "data": {"paused": "true"}}]}),
    );
    assert_eq!(run(&paused, None).action, Action::Create { paused: true });
}

#[test]
fn halted_asked_to_start_becomes_always() {
    let v = vm(
        json!({"runStrategy": "Halted"}),
        json!({"stateChangeRequests": [{"action": "Start", "data": {"paused": "true"}}]}),
    );
    let p = run(&v, None);
    assert_eq!(p.action, Action::SetStrategy(RunStrategy::Always));
    assert!(
        p.status.state_change_requests.is_some(),
        "the request stays for the next sync"
    );
    let v = vm(
        json!({"runStrategy": "Always"}),
        serde_json::to_value(&p.status).unwrap(),
    );
    assert_eq!(run(&v, None).action, Action::Create { paused: true });
}

#[test]
fn once_never_restarts() {
    let v = vm(json!({"runStrategy": "Once"}), json!({}));
    assert_eq!(run(&v, None).action, CREATE);
    assert_eq!(
        run(&v, Some(&vmi("Failed", "a", true))).action,
        Action::None
    );
    assert_eq!(
        run(&v, Some(&vmi("Succeeded", "a", true))).action,
        Action::None
    );
}

#[test]
fn a_deleting_instance_or_vm_is_waited_for() {
    let v = vm(json!({"runStrategy": "Always"}), json!({}));
    let mut going = vmi("Failed", "a", true);
    going.metadata.deletion_timestamp = Some(Time(now()));
    assert_eq!(run(&v, Some(&going)).action, Action::None);
    let mut dying = v.clone();
    dying.metadata.deletion_timestamp = Some(Time(now()));
    let p = run(&dying, None);
    assert_eq!(p.action, Action::None);
    assert_eq!(p.status.printable_status.as_deref(), Some("Terminating"));
}

#[test]
fn a_bad_spec_is_a_failure_condition_and_no_action() {
    let v = vm(json!({"runStrategy": "Always", "running": true}), json!({}));
    let p = run(&v, None);
    assert_eq!(p.action, Action::None);
    let failure = p
        .status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Failure")
        .unwrap();
    assert!(failure.message.as_ref().unwrap().contains("spec.running"));
    let v = vm(json!({"runStrategy": "WaitAsReceiver"}), json!({}));
    assert_eq!(run(&v, None).action, Action::None);
}

#[test]
fn conditions_keep_their_transition_time_while_unchanged() {
    let old_time = "2026-01-01T00:00:00Z";
    let v = vm(
        json!({"runStrategy": "Always"}),
        json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": old_time}]}),
    );
    let p = run(&v, Some(&vmi("Running", "a", true)));
    let ready = &p.status.conditions.as_ref().unwrap()[0];
    assert_eq!(
        ready.last_transition_time.as_ref().unwrap().0.to_string(),
        old_time
    );
    let p = run(&v, None);
    let ready = &p.status.conditions.as_ref().unwrap()[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("VMINotExists"))
    );
    assert_eq!(ready.last_transition_time.as_ref().unwrap().0, now());
}

#[test]
fn the_paused_condition_is_the_instances_with_its_reason_and_message() {
    let v = vm(json!({"runStrategy": "Always"}), json!({}));
    let mut i = vmi("Running", "a", true);
    let paused = |i: &VirtualMachineInstance| {
        run(&v, Some(i))
            .status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Paused")
    };
    assert_eq!(paused(&i), None);
    for (reason, message) in [
        (
            "PausedIOError",
            "VMI was paused, low-level IO error detected",
        ),
        ("PausedByUser", "VMI was paused by user"),
    ] {
        i.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({"type": "Paused", "status": "True",
                "reason": reason, "message": message}))
            .unwrap(),
        ]);
        let c = paused(&i).expect("a Paused condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("True", Some(reason), Some(message))
        );
        let p = run(&v, Some(&i));
        assert_eq!(p.status.printable_status.as_deref(), Some("Paused"));
    }
}

mod props {
    use proptest::prelude::*;

    use super::*;

    fn arb_phase() -> impl Strategy<Value = Option<(&'static str, bool, bool)>> {
        proptest::option::of((
            prop_oneof![
                Just(""),
                Just("Pending"),
                Just("Scheduled"),
                Just("Running"),
                Just("Succeeded"),
                Just("Failed")
            ],
            any::<bool>(),
            any::<bool>(),
        ))
    }

    fn arb_requests() -> impl Strategy<Value = Vec<(bool, Option<&'static str>)>> {
        proptest::collection::vec(
            (
                any::<bool>(),
                proptest::option::of(prop_oneof![Just("a"), Just("b")]),
            ),
            0..4,
        )
    }

    proptest! {
        /// Whatever the VM and instance look like, a sync never deletes an instance other than
        /// the one it saw, never creates while one exists, never acts on a deleting VM, and
        /// always leaves a printable status.
        #[test]
        fn a_sync_is_consistent(
            strategy in prop_oneof![Just("Always"), Just("RerunOnFailure"), Just("Manual"), Just("Halted"), Just("Once")],
            last in proptest::option::of(prop_oneof![Just("Always"), Just("RerunOnFailure"), Just("Manual")]),
            instance in arb_phase(),
            requests in arb_requests(),
            vm_deleting in any::<bool>(),
            failures in 0i32..5,
        ) {
            let reqs: Vec<Value> = requests.iter().map(|(start, uid)| json!({
                "action": if *start { "Start" } else { "Stop" }, "uid": uid })).collect();
            let mut status = json!({"stateChangeRequests": reqs, "runStrategy": last});
            if failures > 0 {
                status["startFailure"] = json!({"consecutiveFailCount": failures, "lastFailedVMIUID": "old",
                    "retryAfterTimestamp": "2026-11-28T12:00:05Z"});
            }
            let mut v = vm(json!({"runStrategy": strategy}), status);
            if vm_deleting {
                v.metadata.deletion_timestamp = Some(Time(now()));
            }
            let i = instance.map(|(phase, ran, deleting)| {
                let mut i = vmi(phase, "a", ran);
                if deleting {
                    i.metadata.deletion_timestamp = Some(Time(now()));
                }
                i
            });
            let p = run(&v, i.as_ref());
            match &p.action {
                Action::Delete { uid } => {
                    prop_assert_eq!(uid.as_str(), "a");
                    prop_assert!(i.is_some());
                }
                Action::Create { .. } => {
                    prop_assert!(i.is_none());
                    prop_assert!(p.requeue_at.is_none());
                }
                Action::SetStrategy(s) => prop_assert_eq!(*s, RunStrategy::Always),
                Action::None => {}
            }
            if vm_deleting {
                prop_assert_eq!(&p.action, &Action::None);
            }
            if i.as_ref().is_some_and(is_deleting) {
                prop_assert_eq!(&p.action, &Action::None);
            }
            prop_assert!(p.status.printable_status.is_some());
            prop_assert_eq!(p.status.created, Some(i.is_some()));
        }
    }
}

fn data_volume(name: &str, phase: &str) -> DataVolume {
    serde_json::from_value(json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}},
        "status": {"phase": phase},
    }))
    .unwrap()
}

fn vm_with_template(strategy: &str) -> VirtualMachine {
    let mut v = vm(json!({"runStrategy": strategy}), json!({}));
    v.spec.data_volume_templates = Some(vec![
        serde_json::from_value(json!({
            "metadata": {"name": "root"},
            "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "1Gi"}}}},
        }))
        .unwrap(),
    ]);
    v.spec.template.spec.as_mut().unwrap().volumes = Some(vec![
        serde_json::from_value(json!({"name": "root", "dataVolume": {"name": "root"}})).unwrap(),
    ]);
    v
}

fn run_with(vm: &VirtualMachine, dvs: &[DataVolume]) -> Plan {
    let storage = Storage::of(dvs, &[]);
    plan(Observed {
        vm,
        vmi: None,
        now: now(),
        jitter: 0.0,
        storage: &storage,
    })
}

#[test]
fn templates_are_made_even_while_stopped_and_the_instance_waits_for_them() {
    // A stopped VM still gets its DataVolumes (upstream makes them at once).
    let halted = vm_with_template("Halted");
    let p = run_with(&halted, &[]);
    assert_eq!(p.create_data_volumes.len(), 1);
    assert_eq!(p.action, Action::None);
    assert_eq!(p.status.printable_status.as_deref(), Some("Stopped"));

    let always = vm_with_template("Always");
    let p = run_with(&always, &[]);
    assert_eq!(p.create_data_volumes.len(), 1);
    assert_eq!(p.action, Action::None, "no instance before its disk exists");
    assert_eq!(p.status.printable_status.as_deref(), Some("Starting"));
    assert!(p.requeue_at.is_some());

    let importing = [data_volume("root", "ImportInProgress")];
    let p = run_with(&always, &importing);
    assert!(p.create_data_volumes.is_empty());
    assert_eq!(p.action, Action::None);
    assert_eq!(p.status.printable_status.as_deref(), Some("Provisioning"));

    let failed = [data_volume("root", "Failed")];
    let p = run_with(&always, &failed);
    assert_eq!(p.action, Action::None);
    assert_eq!(
        p.status.printable_status.as_deref(),
        Some("DataVolumeError")
    );

    for ready in ["Succeeded", "WaitForFirstConsumer", "PendingPopulation"] {
        let p = run_with(&always, &[data_volume("root", ready)]);
        assert_eq!(p.action, CREATE, "{ready}");
    }
}

#[test]
fn a_deleted_vm_makes_no_data_volumes() {
    let mut v = vm_with_template("Always");
    v.metadata.deletion_timestamp = Some(Time(now()));
    assert!(run_with(&v, &[]).create_data_volumes.is_empty());
}

#[test]
fn a_restore_in_progress_holds_the_vm_stopped_and_keeps_its_lock() {
    let locked = json!({"restoreInProgress": "r1"});
    let v = vm(json!({"runStrategy": "Always"}), locked.clone());
    let p = run(&v, None);
    assert_eq!(p.action, Action::None, "not started while restored");
    assert_eq!(
        p.status.restore_in_progress.as_deref(),
        Some("r1"),
        "the lock stays"
    );
    let asked = vm(
        json!({"runStrategy": "Halted"}),
        json!({"restoreInProgress": "r1", "stateChangeRequests": [{"action": "Start"}]}),
    );
    assert_eq!(
        run(&asked, None).action,
        Action::None,
        "a start request waits too"
    );
    // Stopping still works.
    let running = vm(json!({"runStrategy": "Halted"}), locked);
    let i = vmi("Running", "i1", true);
    assert_eq!(run(&running, Some(&i)).action, delete("i1"));
    // Unlocked, it starts.
    let v = vm(json!({"runStrategy": "Always"}), json!({}));
    assert_eq!(run(&v, None).action, CREATE);
}

#[test]
fn a_memory_state_that_no_longer_fits_keeps_the_vm_stopped_saying_why() {
    use crate::snapshot::memory::{RESUME_ANNOTATION, Resume, shape_of};
    let mut v = vm(json!({"runStrategy": "Always"}), json!({}));
    let marker = Resume {
        content: "vmsnapshot-content-1".into(),
        node: "n1".into(),
        restore: "r1-uid".into(),
        claims: Default::default(),
        shape: shape_of(v.spec.template.spec.as_ref().unwrap()),
    };
    let annotations = v.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(
        RESUME_ANNOTATION.into(),
        serde_json::to_string(&marker).unwrap(),
    );
    // Its disks are from another restore than the memory state's: not started.
    annotations.insert(
        crate::snapshot::LAST_RESTORE_ANNOTATION.into(),
        "r2-other".into(),
    );
    let p = run(&v, None);
    assert_eq!(p.action, Action::None);
    let failure = p
        .status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failure")
        .expect("a Failure condition");
    assert_eq!(failure.reason.as_deref(), Some(MEMORY_STATE_MISMATCH));
    assert!(
        failure
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("r2-other"),
        "{failure:?}"
    );
    // The disks it was restored with: it starts (and resumes).
    v.metadata.annotations.as_mut().unwrap().insert(
        crate::snapshot::LAST_RESTORE_ANNOTATION.into(),
        "r1-uid".into(),
    );
    assert_eq!(run(&v, None).action, CREATE);
}
