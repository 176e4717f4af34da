//! What a launcher pod's status says, read the same way by the VMI controller (its VMI's pod)
//! and the migration controller (a migration's target pod): its phase, whether it ended or is
//! going down and why, and the scheduler's Unschedulable verdict.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};

use super::COMPUTE_CONTAINER;

/// The pod's name (empty without one).
pub fn name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or("")
}

/// The pod's phase (empty before the kubelet wrote one).
pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether the pod ended (Succeeded or Failed): its containers never run again.
pub fn is_final(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// Why the pod is down or going down, if it is: deleted, Failed or Succeeded, or its compute
/// container ended while another container runs on (upstream's `isComputeContainerDown`: e.g.
/// a `StartError` when the runtime's start was cut short; the pod never restarts it). `who`
/// names it in the answer (`"its virt-launcher pod"`, `"the target pod"`).
pub fn down(p: &Pod, who: &str) -> Option<String> {
    let pod = format!("{who} {}", name(p));
    if !is_final(p)
        && let Some(t) = terminated(p)
    {
        return Some(format!("{pod}: {t}"));
    }
    if is_final(p) {
        let s = p.status.as_ref();
        let mut why = format!("{pod} {}", phase(p).to_lowercase());
        let detail = s
            .and_then(|s| s.message.clone().or(s.reason.clone()))
            .or_else(|| terminated(p));
        if let Some(d) = detail {
            why.push_str(&format!(": {d}"));
        }
        return Some(why);
    }
    p.metadata
        .deletion_timestamp
        .is_some()
        .then(|| format!("{pod} is being deleted"))
}

/// How the compute container ended (`reason`, exit code, message), if it did.
pub fn terminated(p: &Pod) -> Option<String> {
    let t = compute_status(p)?.state.as_ref()?.terminated.as_ref()?;
    let mut s = format!("the compute container exited with code {}", t.exit_code);
    if let Some(r) = &t.reason {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
        s.push_str(&format!(": {m}"));
    }
    Some(s)
}

/// When the pod ended: its compute container's finish time.
pub fn finished(p: &Pod) -> Option<Timestamp> {
    let t = compute_status(p)?.state.as_ref()?.terminated.as_ref()?;
    t.finished_at.as_ref().map(|t| t.0)
}

/// The compute container's status, once the kubelet reported one.
pub fn compute_status(p: &Pod) -> Option<&ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == COMPUTE_CONTAINER)
}

/// The scheduler's verdict that the pod cannot be placed (`PodScheduled=False`, reason
/// `Unschedulable`), with its message and since when.
pub fn unschedulable(p: &Pod) -> Option<&PodCondition> {
    p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })
}
