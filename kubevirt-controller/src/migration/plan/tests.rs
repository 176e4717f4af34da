use super::*;
use serde_json::{Value, json};

const UID: &str = "mig-1";

fn now() -> Timestamp {
    Timestamp::from_second(1_000_000).expect("time")
}

fn vmim(phase: &str) -> VirtualMachineInstanceMigration {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
        "metadata": {"name": "m", "namespace": "ns", "uid": UID},
        "spec": {"vmiName": "demo"},
        "status": {"phase": phase},
    }))
    .expect("vmim")
}

fn vmi(phase: &str, state: Value) -> VirtualMachineInstance {
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "vmi-1"},
        "spec": {"domain": {"devices": {}}},
        "status": {"phase": phase, "nodeName": "n1", "migrationState": state},
    }))
    .expect("vmi")
}

fn pod(name: &str, migration: Option<&str>, node: Option<&str>, phase: &str) -> Pod {
    let mut labels = json!({"kubevirt.io/created-by": "vmi-1"});
    if let Some(m) = migration {
        labels[super::super::MIGRATION_JOB_LABEL] = json!(m);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "uid": format!("{name}-uid"), "labels": labels,
                     "creationTimestamp": "1970-01-12T13:40:00Z"},
        "spec": {"containers": [], "nodeName": node},
        "status": {"phase": phase},
    }))
    .expect("pod")
}

fn ours(extra: Value) -> Value {
    let mut m = json!({"migrationUid": UID, "sourceNode": "n1", "sourcePod": "src",
                       "targetNode": "n1", "targetPod": "tgt", "completed": false, "failed": false});
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    m
}

fn phase_of(p: &Plan) -> &str {
    p.status.phase.as_deref().unwrap_or("")
}

#[test]
fn a_new_migration_of_a_running_vmi_creates_its_target_pod() {
    let pods = [pod("src", None, Some("n1"), "Running")];
    let p = plan(&vmim(""), Some(&vmi("Running", Value::Null)), &pods, now());
    assert_eq!(p.steps, vec![Step::CreateTargetPod]);
    assert_eq!(phase_of(&p), "Scheduling");
    let stamps = p
        .status
        .phase_transition_timestamps
        .clone()
        .unwrap_or_default();
    assert_eq!(stamps[0].phase.as_deref(), Some("Scheduling"));
}

#[test]
fn a_vmi_that_is_not_running_or_absent_fails_the_migration_naming_why() {
    let p = plan(&vmim(""), Some(&vmi("Scheduled", Value::Null)), &[], now());
    assert_eq!(phase_of(&p), "Failed");
    let why = p
        .status
        .migration_state
        .and_then(|m| m.failure_reason)
        .unwrap_or_default();
    assert!(
        why.contains("demo is not running (phase Scheduled)"),
        "{why}"
    );
    let p = plan(&vmim("Pending"), None, &[], now());
    let why = p
        .status
        .migration_state
        .and_then(|m| m.failure_reason)
        .unwrap_or_default();
    assert_eq!(why, "VirtualMachineInstance ns/demo does not exist");
}

#[test]
fn another_migration_in_flight_keeps_this_one_pending() {
    let other = json!({"migrationUid": "mig-0", "completed": false});
    let pods = [pod("src", None, Some("n1"), "Running")];
    let p = plan(&vmim(""), Some(&vmi("Running", other)), &pods, now());
    assert!(p.steps.is_empty());
    assert_eq!(phase_of(&p), "Pending");
    let finished = json!({"migrationUid": "mig-0", "completed": true});
    let p = plan(
        &vmim("Pending"),
        Some(&vmi("Running", finished)),
        &pods,
        now(),
    );
    assert_eq!(p.steps, vec![Step::CreateTargetPod]);
}

#[test]
fn a_running_target_pod_puts_the_migration_state_on_the_vmi() {
    let pods = [
        pod("src", None, Some("n1"), "Running"),
        pod("tgt", Some(UID), Some("n2"), "Running"),
    ];
    let p = plan(
        &vmim("Scheduling"),
        Some(&vmi("Running", Value::Null)),
        &pods,
        now(),
    );
    assert_eq!(phase_of(&p), "PreparingTarget");
    let [Step::SetVmiState(state)] = p.steps.as_slice() else {
        panic!("{:?}", p.steps)
    };
    assert_eq!(state.migration_uid.as_deref(), Some(UID));
    assert_eq!(state.source_pod.as_deref(), Some("src"));
    assert_eq!(state.source_node.as_deref(), Some("n1"));
    assert_eq!(state.target_pod.as_deref(), Some("tgt"));
    assert_eq!(state.target_node.as_deref(), Some("n2"));
    // Still waiting for a node: Scheduling.
    let waiting = [pods[0].clone(), pod("tgt", Some(UID), None, "Pending")];
    let p = plan(
        &vmim("Scheduling"),
        Some(&vmi("Running", Value::Null)),
        &waiting,
        now(),
    );
    assert!(p.steps.is_empty());
    assert_eq!(phase_of(&p), "Scheduling");
}

#[test]
fn the_agents_writes_move_the_phase_on_to_succeeded() {
    let pods = [
        pod("src", None, Some("n1"), "Running"),
        pod("tgt", Some(UID), Some("n1"), "Running"),
    ];
    let ready = vmi("Running", ours(json!({"targetNodeAddress": "127.0.0.1:9"})));
    assert_eq!(
        phase_of(&plan(&vmim("PreparingTarget"), Some(&ready), &pods, now())),
        "TargetReady"
    );
    let started = vmi(
        "Running",
        ours(json!({"targetNodeAddress": "a", "startTimestamp": "1970-01-12T13:46:00Z"})),
    );
    let p = plan(&vmim("TargetReady"), Some(&started), &pods, now());
    assert_eq!(phase_of(&p), "Running");
    assert_eq!(
        p.status
            .migration_state
            .and_then(|m| m.target_node_address)
            .as_deref(),
        Some("a")
    );
    let completed = vmi("Running", ours(json!({"completed": true})));
    let p = plan(&vmim("Running"), Some(&completed), &pods, now());
    assert_eq!(
        phase_of(&p),
        "Running",
        "not before the target's agent took over"
    );
    let taken = vmi(
        "Running",
        ours(json!({"completed": true, "targetNodeDomainDetected": true})),
    );
    let p = plan(&vmim("Running"), Some(&taken), &pods, now());
    assert_eq!(phase_of(&p), "Succeeded");
    assert!(p.steps.is_empty(), "{:?}", p.steps);
}

#[test]
fn a_failure_reported_by_the_agents_fails_it_and_removes_the_target_pod() {
    let pods = [
        pod("src", None, Some("n1"), "Running"),
        pod("tgt", Some(UID), Some("n1"), "Running"),
    ];
    let failed = vmi(
        "Running",
        ours(json!({"completed": true, "failed": true, "failureReason": "cut stream"})),
    );
    let p = plan(&vmim("Running"), Some(&failed), &pods, now());
    assert_eq!(phase_of(&p), "Failed");
    assert_eq!(
        p.steps,
        vec![Step::DeletePod {
            name: "tgt".into(),
            uid: "tgt-uid".into()
        }]
    );
    let why = p.status.migration_state.and_then(|m| m.failure_reason);
    assert_eq!(why.as_deref(), Some("cut stream"));
}

#[test]
fn a_target_pod_that_dies_fails_the_migration_on_the_vmi_too() {
    let pods = [
        pod("src", None, Some("n1"), "Running"),
        pod("tgt", Some(UID), Some("n1"), "Failed"),
    ];
    let ready = vmi("Running", ours(json!({"targetNodeAddress": "a"})));
    let p = plan(&vmim("TargetReady"), Some(&ready), &pods, now());
    assert_eq!(phase_of(&p), "Failed");
    let [Step::SetVmiState(state)] = p.steps.as_slice() else {
        panic!("{:?}", p.steps)
    };
    assert_eq!(state.failed, Some(true));
    assert!(
        state
            .failure_reason
            .as_deref()
            .unwrap_or("")
            .contains("the target pod tgt failed"),
        "{state:?}"
    );
}

#[test]
fn an_unschedulable_target_pod_fails_after_the_timeout() {
    let mut stuck = pod("tgt", Some(UID), None, "Pending");
    let since = now() - jiff::SignedDuration::from_secs(301);
    stuck.status = serde_json::from_value(json!({"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "lastTransitionTime": Time(since)}]}))
    .expect("status");
    let pods = [pod("src", None, Some("n1"), "Running"), stuck];
    let p = plan(
        &vmim("Scheduling"),
        Some(&vmi("Running", Value::Null)),
        &pods,
        now(),
    );
    assert_eq!(phase_of(&p), "Failed");
    assert!(matches!(p.steps.as_slice(), [Step::DeletePod { .. }]));
}

/// `vmim` as the controller claimed it (finalizer and label), deleted if `deleting`.
fn claimed(
    mut m: VirtualMachineInstanceMigration,
    deleting: bool,
) -> VirtualMachineInstanceMigration {
    m.metadata.finalizers = Some(vec![super::super::FINALIZER.into()]);
    m.metadata.labels =
        Some([(super::super::VMI_NAME_LABEL.to_string(), "demo".to_string())].into());
    if deleting {
        m.metadata.deletion_timestamp = Some(Time(now()));
    }
    m
}

fn abort_condition(p: &Plan) -> bool {
    p.status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == ABORT_REQUESTED && c.status == "True")
}

#[test]
fn a_migration_that_has_not_ended_carries_the_finalizer_and_label_and_loses_the_finalizer_at_its_end()
 {
    let pods = [pod("src", None, Some("n1"), "Running")];
    let running = vmi("Running", Value::Null);
    assert_eq!(
        plan(&vmim(""), Some(&running), &pods, now()).metadata,
        Metadata::Claim
    );
    let mut unlabelled = claimed(vmim(""), false);
    unlabelled.metadata.labels = None;
    assert_eq!(
        plan(&unlabelled, Some(&running), &pods, now()).metadata,
        Metadata::Claim
    );
    assert_eq!(
        plan(&claimed(vmim(""), false), Some(&running), &pods, now()).metadata,
        Metadata::Keep
    );
    let done = plan(
        &claimed(vmim("Succeeded"), false),
        Some(&running),
        &pods,
        now(),
    );
    assert_eq!(done.metadata, Metadata::Release);
    // A deleted one that has not ended is never claimed again.
    let p = plan(&claimed(vmim(""), true), Some(&running), &pods, now());
    assert_ne!(p.metadata, Metadata::Claim);
}

#[test]
fn deleted_before_the_agents_have_it_a_migration_fails_at_once_with_its_target_pod() {
    let pods = [
        pod("src", None, Some("n1"), "Running"),
        pod("tgt", Some(UID), None, "Pending"),
    ];
    let p = plan(
        &claimed(vmim("Scheduling"), true),
        Some(&vmi("Running", Value::Null)),
        &pods,
        now(),
    );
    assert_eq!(phase_of(&p), "Failed");
    assert_eq!(
        p.steps,
        vec![Step::DeletePod {
            name: "tgt".into(),
            uid: "tgt-uid".into()
        }]
    );
    let why = p
        .status
        .migration_state
        .as_ref()
        .and_then(|m| m.failure_reason.clone());
    assert_eq!(why.as_deref(), Some(CANCELLED));
    assert!(abort_condition(&p));
    // It ended: the finalizer goes and the deletion completes.
    assert_eq!(p.metadata, Metadata::Release);
    // Pending, with no pod yet: the same, and no pod is created.
    let p = plan(
        &claimed(vmim("Pending"), true),
        Some(&vmi("Running", Value::Null)),
        &pods[..1],
        now(),
    );
    assert_eq!((phase_of(&p), p.steps.as_slice()), ("Failed", &[][..]));
}

#[test]
fn deleted_while_it_runs_the_vmi_is_asked_to_abort_once_and_the_agents_settle_it() {
    let pods = [
        pod("src", None, Some("n1"), "Running"),
        pod("tgt", Some(UID), Some("n1"), "Running"),
    ];
    let started = json!({"targetNodeAddress": "a", "startTimestamp": "1970-01-12T13:46:40Z"});
    let running = vmi("Running", ours(started.clone()));
    let p = plan(
        &claimed(vmim("Running"), true),
        Some(&running),
        &pods,
        now(),
    );
    assert_eq!(phase_of(&p), "Running");
    let [Step::SetVmiState(state)] = p.steps.as_slice() else {
        panic!("{:?}", p.steps)
    };
    assert_eq!(state.abort_requested, Some(true));
    assert_eq!((state.failed, state.completed), (Some(false), Some(false)));
    assert!(abort_condition(&p));
    assert_eq!(p.metadata, Metadata::Keep);

    // Asked already: nothing more until the source's agent says how it went.
    let mut asked = started.clone();
    asked["abortRequested"] = json!(true);
    asked["abortStatus"] = json!("Aborting");
    let aborting = vmi("Running", ours(asked.clone()));
    let p = plan(
        &claimed(vmim("Running"), true),
        Some(&aborting),
        &pods,
        now(),
    );
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert_eq!(phase_of(&p), "Running");

    // Aborted: the migration failed, the target pod goes, the finalizer goes.
    let mut aborted = asked.clone();
    for (k, v) in [
        ("abortStatus", json!("Succeeded")),
        ("failed", json!(true)),
        ("completed", json!(true)),
        ("failureReason", json!("the migration was cancelled")),
    ] {
        aborted[k] = v;
    }
    let p = plan(
        &claimed(vmim("Running"), true),
        Some(&vmi("Running", ours(aborted))),
        &pods,
        now(),
    );
    assert_eq!(phase_of(&p), "Failed");
    assert!(matches!(p.steps.as_slice(), [Step::DeletePod { name, .. }] if name == "tgt"));
    let state = p.status.migration_state.clone().expect("state");
    assert_eq!(state.abort_status.as_deref(), Some("Succeeded"));
    assert_eq!(p.metadata, Metadata::Release);
}

#[test]
fn a_migration_that_completed_before_its_abort_succeeds() {
    let pods = [
        pod("src", None, Some("n1"), "Running"),
        pod("tgt", Some(UID), Some("n2"), "Running"),
    ];
    let mut moved = vmi(
        "Running",
        ours(
            json!({"targetNode": "n2", "abortRequested": true, "abortStatus": "Failed",
                    "completed": true, "targetNodeDomainDetected": true}),
        ),
    );
    moved.status.as_mut().expect("status").node_name = Some("n2".into());
    let p = plan(&claimed(vmim("Running"), true), Some(&moved), &pods, now());
    assert_eq!(phase_of(&p), "Succeeded");
    assert!(p.steps.is_empty(), "{:?}", p.steps);
    assert_eq!(p.metadata, Metadata::Release);
}
