//! A pod's status computed from what the runtime reports: phase, conditions, IPs and one status
//! per container (running, waiting with a reason, or terminated with its exit code).

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::probe::ProbeView;

/// Why a container is not running, as the kubelet tells it (`ErrImagePull`, `CrashLoopBackOff`...).
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// The reason.
    pub reason: String,
    /// A message for people.
    pub message: String,
}

/// What the status is computed from.
#[derive(Debug, Default)]
pub struct Observed {
    /// The pod's IP (empty before its sandbox runs).
    pub pod_ip: String,
    /// The node's IP.
    pub host_ip: String,
    /// When the kubelet first started the pod.
    pub start_time: Option<String>,
    /// The newest runtime container of each name.
    pub containers: HashMap<String, cri::ContainerStatus>,
    /// The container before the newest one, per name (its end is `lastState`).
    pub previous: HashMap<String, cri::ContainerStatus>,
    /// Why containers wait.
    pub waiting: HashMap<String, Waiting>,
    /// The image ID each container runs.
    pub image_ids: HashMap<String, String>,
    /// A spec this node refuses: the pod fails with this message.
    pub refused: Option<String>,
    /// What the probes of the running containers found, by name (none: no probes).
    pub probes: HashMap<String, ProbeView>,
}

fn ts(nanos: i64) -> Value {
    if nanos <= 0 {
        return Value::Null;
    }
    jiff::Timestamp::from_nanosecond(nanos as i128)
        .map(|t| json!(t.round(jiff::Unit::Second).unwrap_or(t).to_string()))
        .unwrap_or(Value::Null)
}

fn terminated(s: &cri::ContainerStatus) -> Value {
    json!({"terminated": {
        "exitCode": s.exit_code,
        "reason": if s.reason.is_empty() { if s.exit_code == 0 { "Completed" } else { "Error" } } else { s.reason.as_str() },
        "message": if s.message.is_empty() { Value::Null } else { json!(s.message) },
        "startedAt": ts(s.started_at),
        "finishedAt": ts(s.finished_at),
        "containerID": format!("containerd://{}", s.id),
    }})
}

/// Whether the runtime container has run and ended.
pub fn exited(s: &cri::ContainerStatus) -> bool {
    s.state == cri::ContainerState::ContainerExited as i32
}

/// Whether the runtime container runs.
pub fn running(s: &cri::ContainerStatus) -> bool {
    s.state == cri::ContainerState::ContainerRunning as i32
}

/// A container's status, whether it runs, and whether it is ready (running, started and
/// passing its readiness probe).
fn container_status(c: &Container, o: &Observed) -> (Value, bool, bool) {
    let latest = o.containers.get(&c.name);
    let waiting = o.waiting.get(&c.name);
    let is_running = latest.is_some_and(running);
    let probed = o.probes.get(&c.name).copied().unwrap_or(ProbeView {
        // Probes of a running container start at once; until then it has shown nothing.
        started: c.startup_probe.is_none(),
        ready: c.readiness_probe.is_none(),
    });
    let started = is_running && probed.started;
    let ready = started && probed.ready;
    let state = match (latest, waiting) {
        (Some(s), _) if running(s) => json!({"running": {"startedAt": ts(s.started_at)}}),
        (_, Some(w)) => json!({"waiting": {"reason": w.reason, "message": w.message}}),
        (Some(s), None) if exited(s) => terminated(s),
        _ => json!({"waiting": {"reason": "ContainerCreating"}}),
    };
    let last = match (latest, waiting) {
        (Some(s), Some(_)) if exited(s) => terminated(s),
        _ => o
            .previous
            .get(&c.name)
            .filter(|p| exited(p))
            .map_or(json!({}), terminated),
    };
    let mut out = json!({
        "name": c.name,
        "image": c.image.clone().unwrap_or_default(),
        "imageID": o.image_ids.get(&c.name).cloned().unwrap_or_default(),
        "ready": ready,
        "started": started,
        "restartCount": latest.and_then(|s| s.metadata.as_ref()).map_or(0, |m| m.attempt),
        "state": state,
        "lastState": last,
    });
    if let Some(s) = latest {
        out["containerID"] = json!(format!("containerd://{}", s.id));
    }
    (out, is_running, ready)
}

fn condition(type_: &str, ok: bool, old: &Pod, now: &str, reason: Option<&str>) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = old
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| now.to_string());
    let mut c = json!({"type": type_, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason.filter(|_| !ok) {
        c["reason"] = json!(r);
    }
    c
}

fn qos(pod: &Pod) -> &'static str {
    let cs = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let has = |c: &Container, which: &str| {
        c.resources.as_ref().is_some_and(|r| {
            let m = if which == "limits" {
                &r.limits
            } else {
                &r.requests
            };
            m.as_ref()
                .is_some_and(|m| m.contains_key("cpu") || m.contains_key("memory"))
        })
    };
    if cs.iter().all(|c| !has(c, "limits") && !has(c, "requests")) {
        "BestEffort"
    } else if cs.iter().all(|c| {
        c.resources.as_ref().is_some_and(|r| {
            let l = r.limits.clone().unwrap_or_default();
            let q = r.requests.clone().unwrap_or_default();
            ["cpu", "memory"]
                .iter()
                .all(|k| l.contains_key(*k) && q.get(*k).is_none_or(|v| Some(v) == l.get(*k)))
        })
    }) {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The pod's status.
pub fn compute(pod: &Pod, o: &Observed) -> Value {
    let now = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let inits = spec.init_containers.clone().unwrap_or_default();
    let init_done = inits.iter().all(|c| {
        o.containers
            .get(&c.name)
            .is_some_and(|s| exited(s) && s.exit_code == 0)
    });
    let init_failed = policy == "Never"
        && inits.iter().any(|c| {
            o.containers
                .get(&c.name)
                .is_some_and(|s| exited(s) && s.exit_code != 0)
        });
    let init_statuses: Vec<Value> = inits.iter().map(|c| container_status(c, o).0).collect();
    let mut all_ready = !spec.containers.is_empty();
    let mut statuses = Vec::new();
    let mut all_running = !spec.containers.is_empty();
    let mut any_running = false;
    let mut all_exited = !spec.containers.is_empty();
    let mut all_succeeded = true;
    // Containers not started yet (none made, or made and not started): upstream's `waiting`.
    let mut any_waiting = false;
    for c in &spec.containers {
        let (s, r, ready) = container_status(c, o);
        all_running &= r;
        all_ready &= ready;
        any_running |= r;
        let latest = o.containers.get(&c.name);
        let ended = latest.is_some_and(exited);
        all_exited &= ended;
        all_succeeded &= latest.is_some_and(|s| exited(s) && s.exit_code == 0);
        // A restart's new attempt (made, not started yet) counts as the one that ended.
        any_waiting |= latest.is_none_or(|s| {
            s.state == cri::ContainerState::ContainerCreated as i32
                && s.metadata.as_ref().is_none_or(|m| m.attempt == 0)
        });
        statuses.push(s);
    }
    let will_restart = match policy {
        "Never" => false,
        "OnFailure" => !all_succeeded,
        _ => true,
    };
    let (phase, reason, message) = if let Some(m) = &o.refused {
        ("Failed", Some("UnsupportedPodSpec"), Some(m.clone()))
    } else if init_failed {
        ("Failed", None, None)
    } else if !init_done || any_waiting {
        // A container that has not started yet keeps the pod Pending, even while another runs
        // (upstream's kubelet `getPhase`).
        ("Pending", None, None)
    } else if all_exited && !will_restart {
        (
            if all_succeeded { "Succeeded" } else { "Failed" },
            None,
            None,
        )
    } else if any_running || (all_exited && will_restart) {
        ("Running", None, None)
    } else {
        ("Pending", None, None)
    };
    let ready = all_running && all_ready && phase == "Running";
    let not_ready = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut status = json!({
        "phase": phase,
        "conditions": [
            condition("PodReadyToStartContainers", !o.pod_ip.is_empty() || spec.host_network == Some(true), pod, &now, None),
            condition("Initialized", init_done, pod, &now, Some("ContainersNotInitialized")),
            condition("Ready", ready, pod, &now, Some(not_ready)),
            condition("ContainersReady", ready, pod, &now, Some(not_ready)),
            condition("PodScheduled", true, pod, &now, None),
        ],
        "hostIP": o.host_ip,
        "hostIPs": [{"ip": o.host_ip}],
        "containerStatuses": statuses,
        "qosClass": qos(pod),
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if !o.pod_ip.is_empty() {
        status["podIP"] = json!(o.pod_ip);
        status["podIPs"] = json!([{"ip": o.pod_ip}]);
    }
    if let Some(t) = &o.start_time {
        status["startTime"] = json!(t);
    }
    if let Some(r) = reason {
        status["reason"] = json!(r);
    }
    if let Some(m) = message {
        status["message"] = json!(m);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap()
    }

    fn cs(state: cri::ContainerState, exit: i32, attempt: u32) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: "abc".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt,
            }),
            state: state as i32,
            exit_code: exit,
            started_at: 1_700_000_000_000_000_000,
            finished_at: 1_700_000_001_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn phases() {
        let waiting = HashMap::new();
        let ids = HashMap::new();
        let mut o = Observed {
            pod_ip: "10.88.0.2".into(),
            waiting,
            image_ids: ids,
            ..Default::default()
        };
        let s = compute(&pod("Always"), &o);
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );
        o.containers
            .insert("c".into(), cs(cri::ContainerState::ContainerRunning, 0, 0));
        let s = compute(&pod("Always"), &o);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["conditions"][2]["status"], "True");
        assert_eq!(s["containerStatuses"][0]["containerID"], "containerd://abc");
        o.containers
            .insert("c".into(), cs(cri::ContainerState::ContainerExited, 3, 2));
        let s = compute(&pod("Never"), &o);
        assert_eq!(s["phase"], "Failed");
        assert_eq!(
            s["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            3
        );
        assert_eq!(s["containerStatuses"][0]["restartCount"], 2);
        assert_eq!(compute(&pod("Always"), &o)["phase"], "Running");
        o.containers
            .insert("c".into(), cs(cri::ContainerState::ContainerExited, 0, 0));
        assert_eq!(compute(&pod("OnFailure"), &o)["phase"], "Succeeded");
    }

    /// One container runs, the other has not started (its image does not pull): Pending, as
    /// upstream's kubelet says, not Running.
    #[test]
    fn a_container_not_started_yet_keeps_the_pod_pending() {
        let mut two = pod("Never");
        let mut spec = two.spec.take().unwrap();
        let mut second = spec.containers[0].clone();
        second.name = "d".into();
        spec.containers.push(second);
        two.spec = Some(spec);
        let mut o = Observed::default();
        o.containers
            .insert("c".into(), cs(cri::ContainerState::ContainerRunning, 0, 0));
        o.waiting.insert(
            "d".into(),
            Waiting {
                reason: "ErrImagePull".into(),
                message: "not found".into(),
            },
        );
        assert_eq!(compute(&two, &o)["phase"], "Pending");
        o.containers
            .insert("d".into(), cs(cri::ContainerState::ContainerCreated, 0, 0));
        assert_eq!(compute(&two, &o)["phase"], "Pending");
        o.containers
            .insert("d".into(), cs(cri::ContainerState::ContainerRunning, 0, 0));
        assert_eq!(compute(&two, &o)["phase"], "Running");
        // A container that ran and ended (Never) beside a running one: Running, as upstream.
        o.containers
            .insert("d".into(), cs(cri::ContainerState::ContainerExited, 128, 0));
        assert_eq!(compute(&two, &o)["phase"], "Running");
    }

    #[test]
    fn crash_loop_shows_waiting_and_last_state() {
        let mut waiting = HashMap::new();
        waiting.insert(
            "c".to_string(),
            Waiting {
                reason: "CrashLoopBackOff".into(),
                message: "back-off".into(),
            },
        );
        let ids = HashMap::new();
        let mut o = Observed {
            waiting,
            image_ids: ids,
            ..Default::default()
        };
        o.containers
            .insert("c".into(), cs(cri::ContainerState::ContainerExited, 1, 1));
        let s = compute(&pod("Always"), &o);
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        assert_eq!(
            s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
            1
        );
    }
}
