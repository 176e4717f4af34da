use serde_json::{Value, json};

use super::*;

const NOW: &str = "2026-12-05T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn vmi(phase: &str, status: Value) -> VirtualMachineInstance {
    let mut status = status;
    if !phase.is_empty() {
        status["phase"] = phase.into();
    }
    serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "vmi-uid"},
        "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}},
        "status": status,
    }))
    .unwrap()
}

fn pod(name: &str, created: &str, spec: Value, status: Value) -> Pod {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "compute", "image": "launcher:v1"}]);
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"),
                     "creationTimestamp": created},
        "spec": spec, "status": status,
    }))
    .unwrap()
}

fn pending_pod() -> Pod {
    pod(
        "virt-launcher-demo-abcde",
        NOW,
        json!({}),
        json!({"phase": "Pending"}),
    )
}

fn running_pod() -> Pod {
    pod(
        "virt-launcher-demo-abcde",
        NOW,
        json!({"nodeName": "node1"}),
        json!({"phase": "Running"}),
    )
}

fn condition<'a>(p: &'a Plan, type_: &str) -> Option<&'a VirtualMachineInstanceCondition> {
    p.status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

fn transitions(p: &Plan) -> Vec<&str> {
    p.status
        .phase_transition_timestamps
        .iter()
        .flatten()
        .filter_map(|t| t.phase.as_deref())
        .collect()
}

#[test]
fn a_new_vmi_gets_a_pod_and_goes_pending_then_scheduling() {
    let p = plan(&vmi("", json!({})), &[], now());
    assert_eq!(p.actions, vec![PodAction::Create]);
    assert_eq!(p.status.phase.as_deref(), Some("Pending"));
    assert_eq!(transitions(&p), ["Pending"]);
    let pending = vmi("Pending", serde_json::to_value(&p.status).unwrap());
    let p = plan(&pending, &[pending_pod()], now());
    assert!(p.actions.is_empty());
    assert_eq!(p.status.phase.as_deref(), Some("Scheduling"));
    assert_eq!(transitions(&p), ["Pending", "Scheduling"]);
    assert_eq!(
        p.status.active_pods,
        Some([("virt-launcher-demo-abcde-uid".to_string(), String::new())].into())
    );
    assert_eq!(
        p.status.launcher_container_image_version.as_deref(),
        Some("launcher:v1")
    );
    assert_eq!(p.node_label, None);
}

#[test]
fn a_bound_running_pod_makes_the_vmi_scheduled_on_its_node() {
    let p = plan(&vmi("Scheduling", json!({})), &[running_pod()], now());
    assert!(p.actions.is_empty());
    assert_eq!(p.status.phase.as_deref(), Some("Scheduled"));
    assert_eq!(p.status.node_name.as_deref(), Some("node1"));
    assert_eq!(p.node_label.as_deref(), Some("node1"));
    assert_eq!(
        p.status.active_pods,
        Some(
            [(
                "virt-launcher-demo-abcde-uid".to_string(),
                "node1".to_string()
            )]
            .into()
        )
    );
    // Bound but not Running yet (pulling images, starting): still Scheduling.
    let bound = pod(
        "virt-launcher-demo-abcde",
        NOW,
        json!({"nodeName": "node1"}),
        json!({"phase": "Pending"}),
    );
    let p = plan(&vmi("Scheduling", json!({})), &[bound], now());
    assert_eq!(p.status.phase.as_deref(), Some("Scheduling"));
    // Once Scheduled, the node agent writes the phases: nothing changes here.
    let mut scheduled = vmi("Running", json!({"nodeName": "node1"}));
    scheduled.metadata.labels = Some([("kubevirt.io/nodeName".into(), "node1".into())].into());
    let p = plan(&scheduled, &[running_pod()], now());
    assert_eq!(p.status.phase.as_deref(), Some("Running"));
    assert!(p.actions.is_empty());
    assert_eq!(p.node_label, None);
}

#[test]
fn the_schedulers_verdict_and_image_pull_errors_show_on_the_vmi() {
    let stuck = pod(
        "virt-launcher-demo-abcde",
        NOW,
        json!({}),
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient memory."}]}),
    );
    let p = plan(&vmi("Scheduling", json!({})), &[stuck], now());
    assert_eq!(p.status.phase.as_deref(), Some("Scheduling"));
    let c = condition(&p, "PodScheduled").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
        (
            "False",
            Some("Unschedulable"),
            Some("0/1 nodes are available: 1 Insufficient memory.")
        )
    );
    // It keeps its transition time while it holds, and goes once the pod is scheduled.
    let later: Timestamp = "2026-12-05T12:05:00Z".parse().unwrap();
    let again = plan(
        &vmi("Scheduling", serde_json::to_value(&p.status).unwrap()),
        &[pod(
            "virt-launcher-demo-abcde",
            NOW,
            json!({}),
            json!({"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/1 nodes are available: 1 Insufficient memory."}]}),
        )],
        later,
    );
    assert_eq!(
        condition(&again, "PodScheduled")
            .unwrap()
            .last_transition_time,
        Some(Time(now()))
    );
    let pulling = pod(
        "virt-launcher-demo-abcde",
        NOW,
        json!({"nodeName": "node1"}),
        json!({"phase": "Pending", "containerStatuses": [{"name": "compute", "image": "launcher:v1",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"launcher:v1\""}}}]}),
    );
    let p = plan(
        &vmi("Scheduling", serde_json::to_value(&again.status).unwrap()),
        &[pulling],
        later,
    );
    assert!(condition(&p, "PodScheduled").is_none());
    let c = condition(&p, "Synchronized").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
        (
            "False",
            Some("ImagePullBackOff"),
            Some("Back-off pulling image \"launcher:v1\"")
        )
    );
    let p = plan(
        &vmi("Scheduling", serde_json::to_value(&p.status).unwrap()),
        &[running_pod()],
        later,
    );
    assert_eq!(p.status.phase.as_deref(), Some("Scheduled"));
    assert!(condition(&p, "Synchronized").is_none());
}

#[test]
fn a_pod_that_dies_before_the_agent_takes_over_fails_the_vmi() {
    let failed = pod(
        "virt-launcher-demo-abcde",
        NOW,
        json!({"nodeName": "node1"}),
        json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}),
    );
    let p = plan(&vmi("Scheduling", json!({})), &[failed], now());
    assert_eq!(p.status.phase.as_deref(), Some("Failed"));
    assert_eq!(
        p.status.reason.as_deref(),
        Some("its virt-launcher pod virt-launcher-demo-abcde failed: The node was low on memory.")
    );
    // The final VMI's pod is deleted.
    let p2 = plan(
        &vmi("Failed", serde_json::to_value(&p.status).unwrap()),
        &[running_pod()],
        now(),
    );
    assert_eq!(
        p2.actions,
        vec![PodAction::Delete {
            name: "virt-launcher-demo-abcde".into(),
            uid: "virt-launcher-demo-abcde-uid".into()
        }]
    );
    // Deleted while Scheduling.
    let p = plan(
        &vmi("Scheduling", json!({"activePods": {"p-uid": ""}})),
        &[],
        now(),
    );
    assert_eq!(p.status.phase.as_deref(), Some("Failed"));
    assert_eq!(
        p.status.reason.as_deref(),
        Some("its virt-launcher pod (uid p-uid) was deleted")
    );
    let mut going = pending_pod();
    going.metadata.deletion_timestamp = Some(Time(now()));
    let p = plan(&vmi("Scheduling", json!({})), &[going], now());
    assert_eq!(
        p.status.reason.as_deref(),
        Some("its virt-launcher pod virt-launcher-demo-abcde is being deleted")
    );
}

#[test]
fn once_the_agent_owns_the_vmi_a_finished_pod_waits_for_its_outcome() {
    let ended = pod(
        "virt-launcher-demo-abcde",
        NOW,
        json!({"nodeName": "node1"}),
        json!({"phase": "Succeeded", "containerStatuses": [{"name": "compute", "image": "launcher:v1",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "finishedAt": NOW}}}]}),
    );
    let running = vmi("Running", json!({"nodeName": "node1"}));
    let p = plan(&running, std::slice::from_ref(&ended), now());
    assert_eq!(p.status.phase.as_deref(), Some("Running"));
    assert_eq!(p.requeue_at, Some(now() + AGENT_GRACE));
    let late = now() + AGENT_GRACE;
    let p = plan(&running, std::slice::from_ref(&ended), late);
    assert_eq!(p.status.phase.as_deref(), Some("Failed"));
    assert_eq!(
        p.status.reason.as_deref(),
        Some(
            "its virt-launcher pod virt-launcher-demo-abcde succeeded: the compute container exited with code 0 (Completed), and the node agent reported no outcome"
        )
    );
    // The agent's final phase stands.
    let done = vmi("Succeeded", json!({"nodeName": "node1"}));
    let p = plan(&done, &[ended], late);
    assert_eq!(p.status.phase.as_deref(), Some("Succeeded"));
    assert_eq!(p.status.reason, None);
    // A Running VMI whose pod is gone has failed.
    let p = plan(&running, &[], now());
    assert_eq!(p.status.phase.as_deref(), Some("Failed"));
    assert_eq!(transitions(&p), ["Failed"]);
}

#[test]
fn a_deleted_vmi_loses_its_pod_unless_the_agent_shuts_it_down_first() {
    let mut deleting = vmi("Running", json!({"nodeName": "node1"}));
    deleting.metadata.deletion_timestamp = Some(Time(now()));
    let p = plan(&deleting, &[running_pod()], now());
    assert_eq!(
        p.actions,
        vec![PodAction::Delete {
            name: "virt-launcher-demo-abcde".into(),
            uid: "virt-launcher-demo-abcde-uid".into()
        }]
    );
    assert_eq!(p.status.phase.as_deref(), Some("Running"));
    deleting.metadata.finalizers = Some(vec![FINALIZER.into()]);
    let p = plan(&deleting, &[running_pod()], now());
    assert!(p.actions.is_empty());
    // A pod already on its way out is not deleted again.
    let mut going = running_pod();
    going.metadata.deletion_timestamp = Some(Time(now()));
    let p = plan(&vmi("Succeeded", json!({})), &[going], now());
    assert!(p.actions.is_empty());
}

#[test]
fn never_two_pods_the_oldest_stays() {
    let older = pod(
        "virt-launcher-demo-old",
        "2026-12-05T11:00:00Z",
        json!({"nodeName": "node1"}),
        json!({"phase": "Running"}),
    );
    let newer = pod(
        "virt-launcher-demo-new",
        NOW,
        json!({}),
        json!({"phase": "Pending"}),
    );
    let p = plan(&vmi("Scheduling", json!({})), &[newer, older], now());
    assert_eq!(
        p.actions,
        vec![PodAction::Delete {
            name: "virt-launcher-demo-new".into(),
            uid: "virt-launcher-demo-new-uid".into()
        }]
    );
    assert_eq!(p.status.phase.as_deref(), Some("Scheduled"));
}

#[test]
fn a_refused_create_is_a_synchronized_condition_until_a_pod_exists() {
    let mut p = plan(&vmi("", json!({})), &[], now());
    failed_create(
        &mut p.status,
        "pods \"x\" is forbidden: exceeded quota".into(),
        now(),
    );
    let c = condition(&p, "Synchronized").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
        (
            "False",
            Some("FailedCreate"),
            Some("pods \"x\" is forbidden: exceeded quota")
        )
    );
    let p = plan(
        &vmi("Pending", serde_json::to_value(&p.status).unwrap()),
        &[pending_pod()],
        now(),
    );
    assert!(condition(&p, "Synchronized").is_none());
}

#[test]
fn a_missing_claim_keeps_the_vmi_pending_naming_it_until_it_appears() {
    let v = vmi("", json!({}));
    let mut p = plan(&v, &[], now());
    assert_eq!(p.actions, vec![PodAction::Create]);
    // The controller found the claim missing: no pod, and the VMI says why.
    claim_missing(&mut p.status, v.status.as_ref(), "ns", "data", now());
    assert_eq!(p.status.phase.as_deref(), Some("Pending"));
    let message = "PVC ns/data does not exist, waiting for it to appear";
    for (type_, reason) in [
        (POD_SCHEDULED, "Unschedulable"),
        (SYNCHRONIZED, FAILED_PVC_NOT_FOUND),
    ] {
        let c = condition(&p, type_).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("False", Some(reason), Some(message)),
            "{type_}"
        );
    }
    // Still missing a minute later: the same conditions, since the first time.
    let waiting = vmi("Pending", serde_json::to_value(&p.status).unwrap());
    let later: Timestamp = "2026-12-05T12:01:00Z".parse().unwrap();
    let mut again = plan(&waiting, &[], later);
    claim_missing(
        &mut again.status,
        waiting.status.as_ref(),
        "ns",
        "data",
        later,
    );
    assert_eq!(again.status.conditions, p.status.conditions);
    // The claim exists: the pod is created and the conditions go.
    let found = plan(&waiting, &[], later);
    assert_eq!(found.actions, vec![PodAction::Create]);
    assert_eq!(condition(&found, POD_SCHEDULED), None);
    assert_eq!(condition(&found, SYNCHRONIZED), None);
}

#[test]
fn a_pod_waiting_for_its_data_volume_says_so_until_it_is_ready() {
    let now: Timestamp = "2026-12-05T12:00:00Z".parse().unwrap();
    let mut status = VirtualMachineInstanceStatus::default();
    data_volume_not_ready(&mut status, "ns", "root", "ImportInProgress", now);
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    let c = status.conditions.as_ref().unwrap();
    let dv = c.iter().find(|c| c.type_ == DATA_VOLUMES_READY).unwrap();
    assert_eq!(
        (dv.status.as_str(), dv.reason.as_deref()),
        ("False", Some("NotReady"))
    );
    assert!(
        dv.message
            .as_deref()
            .unwrap()
            .contains("ns/root is not ready yet (phase ImportInProgress)")
    );
    data_volumes_ready(&mut status, now);
    let c = status.conditions.as_ref().unwrap();
    let dv: Vec<_> = c.iter().filter(|c| c.type_ == DATA_VOLUMES_READY).collect();
    assert_eq!(dv.len(), 1);
    assert_eq!(dv[0].status, "True");
}

/// The compute container ended but the pod runs on (its console-log container): the runtime's
/// start was cut short (`StartError`, found by the chaos suite when `up` was killed mid-start).
/// A launcher pod never restarts it, so the VMI must not wait forever: it fails (at once before
/// the agent owns it, after the agent's grace once it does) and the VM makes a new one.
#[test]
fn a_pod_whose_compute_container_ended_is_down_though_it_runs_on() {
    let start_error = pod(
        "virt-launcher-demo-abcde",
        NOW,
        json!({"nodeName": "node1"}),
        json!({"phase": "Running", "containerStatuses": [
            {"name": "compute", "ready": false, "restartCount": 0, "image": "l", "imageID": "",
             "state": {"terminated": {"exitCode": 128, "reason": "StartError", "finishedAt": NOW,
               "message": "failed to create shim task: context canceled"}}},
            {"name": "guest-console-log", "ready": true, "restartCount": 0, "image": "l",
             "imageID": "", "state": {"running": {"startedAt": NOW}}}]}),
    );
    let reason = "its virt-launcher pod virt-launcher-demo-abcde: the compute container exited \
                  with code 128 (StartError): failed to create shim task: context canceled";
    let p = plan(
        &vmi("Scheduling", json!({})),
        std::slice::from_ref(&start_error),
        now(),
    );
    assert_eq!(p.status.phase.as_deref(), Some("Failed"));
    assert_eq!(p.status.reason.as_deref(), Some(reason));
    let scheduled = vmi("Scheduled", json!({"nodeName": "node1"}));
    let p = plan(&scheduled, std::slice::from_ref(&start_error), now());
    assert_eq!(p.status.phase.as_deref(), Some("Scheduled"));
    assert_eq!(p.requeue_at, Some(now() + AGENT_GRACE));
    let p = plan(&scheduled, &[start_error], now() + AGENT_GRACE);
    assert_eq!(p.status.phase.as_deref(), Some("Failed"));
    assert_eq!(
        p.status.reason.as_deref(),
        Some(format!("{reason}, and the node agent reported no outcome").as_str())
    );
    // A running compute container is not down.
    let p = plan(&scheduled, &[running_pod()], now());
    assert_eq!(p.status.phase.as_deref(), Some("Scheduled"));
    assert_eq!(p.requeue_at, None);
}

#[test]
fn a_migrations_target_pod_is_left_alone_and_becomes_the_vmis_pod_once_it_took_over() {
    let source = pod(
        "virt-launcher-demo-src",
        "2026-12-05T11:00:00Z",
        json!({"nodeName": "node1"}),
        json!({"phase": "Running"}),
    );
    let mut target = pod(
        "virt-launcher-demo-tgt",
        NOW,
        json!({"nodeName": "node1"}),
        json!({"phase": "Running"}),
    );
    target.metadata.labels = Some(
        [(
            crate::migration::MIGRATION_JOB_LABEL.to_string(),
            "mig-1".to_string(),
        )]
        .into(),
    );
    let migrating = json!({"nodeName": "node1", "migrationState": {
        "migrationUid": "mig-1", "sourcePod": "virt-launcher-demo-src",
        "targetPod": "virt-launcher-demo-tgt", "completed": false}});
    let pods = [source.clone(), target.clone()];
    let p = plan(&vmi("Running", migrating), &pods, now());
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.status.active_pods.map(|m| m.len()), Some(2));
    // Moved: the source (ended) is not the VMI's any more and goes; the target stays.
    let mut ended = source;
    ended.status = serde_json::from_value(json!({"phase": "Succeeded"})).unwrap();
    let moved = json!({"nodeName": "node1", "migrationState": {
        "migrationUid": "mig-1", "sourcePod": "virt-launcher-demo-src",
        "targetPod": "virt-launcher-demo-tgt", "completed": true, "failed": false}});
    let p = plan(&vmi("Running", moved), &[ended, target], now());
    assert_eq!(
        p.actions,
        vec![PodAction::Delete {
            name: "virt-launcher-demo-src".into(),
            uid: "virt-launcher-demo-src-uid".into()
        }]
    );
    assert_eq!(p.status.phase.as_deref(), Some("Running"));
}
