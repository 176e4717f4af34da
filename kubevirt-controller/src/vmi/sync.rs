//! One sync of a VMI as a pure function of what the VMI controller observed (the VMI, its
//! launcher pods, the time): what to do to the pods and the status to write (upstream's
//! virt-controller `sync` and `updateStatus` for VMIs).
//!
//! The controller owns the phases before the node agent takes over: `""`/Pending (no pod yet:
//! create one) → Scheduling (a pod exists; the scheduler's and the kubelet's troubles shown as
//! conditions) → Scheduled (the pod is bound and Running: the agent starts the launcher in it and
//! writes Running and the rest). A pod that goes down before the VMI is final fails the VMI;
//! once the agent owns the VMI (Scheduled, Running) a pod that ended is left to the agent, which
//! reads the launcher's final status, for [`AGENT_GRACE`].

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::core::v1::{
    VirtualMachineInstance, VirtualMachineInstanceCondition,
    VirtualMachineInstancePhaseTransitionTimestamp, VirtualMachineInstanceStatus,
};

use super::COMPUTE_CONTAINER;
use super::pod_state::{
    self, compute_status, finished, is_final as pod_final, name, phase as pod_phase, terminated,
};
use crate::migration::active::{active_pod, migration_of};
use crate::node::agent::FINALIZER;
use crate::vm::instance::{is_deleting, is_final, phase};

/// How long the node agent has to report the outcome of a VMI whose pod ended (Succeeded or
/// Failed) before the controller fails the VMI itself.
pub const AGENT_GRACE: Duration = Duration::from_secs(30);
/// The condition the scheduler's verdict is copied to (upstream's).
pub const POD_SCHEDULED: &str = "PodScheduled";
/// The condition that says the controller could not do its part (a refused create, an image
/// that cannot be pulled), upstream's `Synchronized`.
pub const SYNCHRONIZED: &str = "Synchronized";
/// The Synchronized reason of a pod the API server refused (upstream's).
pub const FAILED_CREATE: &str = "FailedCreate";
/// The Synchronized reason of a VMI whose claim does not exist (upstream's).
pub const FAILED_PVC_NOT_FOUND: &str = "FailedPvcNotFound";
/// The image-pull reasons of a waiting container that are shown on the VMI.
const IMAGE_PULL_REASONS: [&str; 3] = ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"];

/// What to do to the VMI's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodAction {
    /// Create its pod.
    Create,
    /// Delete this pod (gracefully), if it still has this uid.
    Delete {
        /// The pod's name.
        name: String,
        /// Its uid (a precondition of the delete).
        uid: String,
    },
}

/// The outcome of one sync.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What to do to the pods.
    pub actions: Vec<PodAction>,
    /// The status to write.
    pub status: VirtualMachineInstanceStatus,
    /// The `kubevirt.io/nodeName` label the VMI must carry, when it does not yet.
    pub node_label: Option<String>,
    /// Sync again at this time (the agent's grace ends).
    pub requeue_at: Option<Timestamp>,
}

/// Plans one sync of `vmi`, whose pods (label `kubevirt.io/created-by=<uid>`) are `pods`.
pub fn plan(vmi: &VirtualMachineInstance, pods: &[Pod], now: Timestamp) -> Plan {
    let old = vmi.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut actions = Vec::new();
    let mut requeue_at = None;
    let mut node_label = None;
    // The pod running the guest is the VMI's (the oldest, or the one a migration moved it
    // to); any other is deleted (never two launchers for one VMI) but a migration's target,
    // which the migration controller owns.
    let pod = active_pod(vmi, pods);
    let extras = pods.iter().filter(|p| {
        pod.is_none_or(|a| a.metadata.uid != p.metadata.uid) && migration_of(p).is_none()
    });
    for extra in extras {
        actions.push(delete(extra));
    }
    status.active_pods = Some(
        pods.iter()
            .filter(|p| !pod_final(p))
            .filter_map(|p| Some((p.metadata.uid.clone()?, node(p).unwrap_or("").to_string())))
            .collect::<BTreeMap<_, _>>(),
    )
    .filter(|m| !m.is_empty());
    if let Some(image) = pod.and_then(compute_image) {
        status.launcher_container_image_version = Some(image);
    }
    let agent_finalizer = vmi
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER);
    let mut conditions = Conditions::of(&old);
    if is_final(vmi) || (is_deleting(vmi) && !agent_finalizer) {
        // Done with (or deleted without a node agent to shut it down first): its pods go,
        // a migration's target too.
        for p in pods {
            let listed = actions.contains(&delete(p));
            if p.metadata.deletion_timestamp.is_none() && !listed {
                actions.push(delete(p));
            }
        }
    } else if is_deleting(vmi) {
        // The node agent's finalizer shuts the guest down; the pod goes with the VMI.
    } else {
        match (phase(vmi), pod) {
            ("" | "Pending", None) => {
                actions.push(PodAction::Create);
                status.phase = Some("Pending".into());
            }
            ("" | "Pending" | "Scheduling", Some(p)) if down(p).is_some() => {
                fail(&mut status, down(p).unwrap_or_default());
            }
            ("Scheduling", None) => fail(&mut status, gone(&old)),
            ("" | "Pending" | "Scheduling", Some(p)) => {
                match node(p).filter(|_| pod_phase(p) == "Running") {
                    Some(n) => {
                        status.phase = Some("Scheduled".into());
                        status.node_name = Some(n.to_string());
                    }
                    None => {
                        status.phase = Some("Scheduling".into());
                        conditions.scheduling(p, now);
                    }
                }
            }
            ("Scheduled" | "Running", None) => fail(&mut status, gone(&old)),
            ("Scheduled" | "Running", Some(p)) => {
                let ended = pod_final(p) || terminated(p).is_some();
                if let Some(why) = down(p).filter(|_| ended) {
                    // The agent reads the launcher's final status; it gets a while to.
                    let since = finished(p).unwrap_or(now);
                    let deadline = since + AGENT_GRACE;
                    if now >= deadline {
                        fail(
                            &mut status,
                            format!("{why}, and the node agent reported no outcome"),
                        );
                    } else {
                        requeue_at = Some(deadline);
                    }
                }
            }
            _ => {}
        }
    }
    if pod.is_some() {
        conditions.drop_reasons(SYNCHRONIZED, &[FAILED_CREATE]);
    }
    // Said again by the controller for as long as the claim is missing ([`claim_missing`]).
    conditions.drop_reasons(SYNCHRONIZED, &[FAILED_PVC_NOT_FOUND]);
    if !matches!(status.phase.as_deref(), Some("Scheduling")) {
        conditions.drop(POD_SCHEDULED);
        conditions.drop_reasons(SYNCHRONIZED, &IMAGE_PULL_REASONS);
    }
    status.conditions = conditions.into_list();
    if status.phase != old.phase
        && let Some(p) = &status.phase
    {
        status
            .phase_transition_timestamps
            .get_or_insert_with(Vec::new)
            .push(VirtualMachineInstancePhaseTransitionTimestamp {
                phase: Some(p.clone()),
                phase_transition_timestamp: Some(Time(now)),
            });
    }
    if status.phase.as_deref() == Some("Scheduled")
        && let Some(n) = &status.node_name
    {
        let labelled = vmi
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(crate::node::report::NODE_NAME_LABEL))
            .is_some_and(|l| l == n);
        if !labelled {
            node_label = Some(n.clone());
        }
    }
    Plan {
        actions,
        status,
        node_label,
        requeue_at,
    }
}

/// Sets the VMI Failed with `reason`.
fn fail(status: &mut VirtualMachineInstanceStatus, reason: String) {
    status.phase = Some("Failed".into());
    status.reason = Some(reason);
}

/// Why a VMI whose pod vanished failed (`activePods` still names the pod's uid).
fn gone(old: &VirtualMachineInstanceStatus) -> String {
    match old.active_pods.as_ref().and_then(|m| m.keys().next()) {
        Some(uid) => format!("its virt-launcher pod (uid {uid}) was deleted"),
        None => "its virt-launcher pod was deleted".into(),
    }
}

fn delete(p: &Pod) -> PodAction {
    PodAction::Delete {
        name: name(p).to_string(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
    }
}

fn node(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Why the VMI's pod is down or going down, if it is ([`pod_state::down`]).
fn down(p: &Pod) -> Option<String> {
    pod_state::down(p, "its virt-launcher pod")
}

/// The compute container's image (upstream's `launcherContainerImageVersion`).
fn compute_image(p: &Pod) -> Option<String> {
    p.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == COMPUTE_CONTAINER)?
        .image
        .clone()
}

/// `status` with the Synchronized=False condition of a pod the API server refused to create
/// (`message`: its answer).
pub fn failed_create(status: &mut VirtualMachineInstanceStatus, message: String, now: Timestamp) {
    let old = status.clone();
    let mut c = Conditions::of(&old);
    c.set(SYNCHRONIZED, "False", FAILED_CREATE, message, now);
    status.conditions = c.into_list();
}

/// `status` of a VMI that gets no pod because its claim `claim` (in `namespace`) does not exist:
/// Pending, unschedulable and not synchronized, naming the claim (upstream's wording). `before`
/// is the status read: conditions already saying so keep their transition time.
pub fn claim_missing(
    status: &mut VirtualMachineInstanceStatus,
    before: Option<&VirtualMachineInstanceStatus>,
    namespace: &str,
    claim: &str,
    now: Timestamp,
) {
    let message = format!("PVC {namespace}/{claim} does not exist, waiting for it to appear");
    let since = |type_: &str| {
        before
            .and_then(|b| b.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == "False")
            .and_then(|c| c.last_transition_time.as_ref())
            .map_or(now, |t| t.0)
    };
    let old = status.clone();
    let mut c = Conditions::of(&old);
    let (scheduled, synced) = (since(POD_SCHEDULED), since(SYNCHRONIZED));
    c.set(
        POD_SCHEDULED,
        "False",
        "Unschedulable",
        message.clone(),
        scheduled,
    );
    c.set(SYNCHRONIZED, "False", FAILED_PVC_NOT_FOUND, message, synced);
    status.conditions = c.into_list();
    status.phase = Some("Pending".into());
}

/// Upstream's VMI condition while its DataVolumes are populated.
pub const DATA_VOLUMES_READY: &str = "DataVolumesReady";

/// `status` of a VMI whose pod waits for DataVolume `dv` (in phase `dv_phase`) to be populated
/// (upstream's `DataVolumesReady=False`): Pending, no pod yet.
pub fn data_volume_not_ready(
    status: &mut VirtualMachineInstanceStatus,
    namespace: &str,
    dv: &str,
    dv_phase: &str,
    now: Timestamp,
) {
    let phase = if dv_phase.is_empty() {
        "Pending"
    } else {
        dv_phase
    };
    let message = format!("DataVolume {namespace}/{dv} is not ready yet (phase {phase})");
    let mut c = Conditions::of(status);
    c.set(DATA_VOLUMES_READY, "False", "NotReady", message, now);
    status.conditions = c.into_list();
    status.phase = Some("Pending".into());
}

/// `status` of a VMI whose DataVolumes are all populated (`DataVolumesReady=True`).
pub fn data_volumes_ready(status: &mut VirtualMachineInstanceStatus, now: Timestamp) {
    let mut c = Conditions::of(status);
    c.set(
        DATA_VOLUMES_READY,
        "True",
        "AllDataVolumesReady",
        "All of the VMI's DataVolumes are bound and ready".into(),
        now,
    );
    status.conditions = c.into_list();
}

/// The VMI's conditions while they are edited: each keeps its transition time while its status
/// stays.
struct Conditions {
    list: Vec<VirtualMachineInstanceCondition>,
}

impl Conditions {
    fn of(old: &VirtualMachineInstanceStatus) -> Self {
        Conditions {
            list: old.conditions.clone().unwrap_or_default(),
        }
    }

    fn set(&mut self, type_: &str, status: &str, reason: &str, message: String, now: Timestamp) {
        let since = self
            .list
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        self.drop(type_);
        self.list.push(VirtualMachineInstanceCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(since),
            last_probe_time: None,
        });
    }

    fn drop(&mut self, type_: &str) {
        self.list.retain(|c| c.type_ != type_);
    }

    fn drop_reasons(&mut self, type_: &str, reasons: &[&str]) {
        self.list
            .retain(|c| c.type_ != type_ || !reasons.contains(&c.reason.as_deref().unwrap_or("")));
    }

    /// While the pod waits: the scheduler's Unschedulable verdict, a compute container that
    /// cannot pull its image.
    fn scheduling(&mut self, p: &Pod, now: Timestamp) {
        match pod_state::unschedulable(p) {
            Some(c) => {
                let message = c.message.clone().unwrap_or_default();
                self.set(POD_SCHEDULED, "False", "Unschedulable", message, now);
            }
            None => self.drop(POD_SCHEDULED),
        }
        let pulling = compute_status(p)
            .and_then(|c| c.state.as_ref()?.waiting.as_ref())
            .filter(|w| IMAGE_PULL_REASONS.contains(&w.reason.as_deref().unwrap_or("")));
        match pulling {
            Some(w) => {
                let reason = w.reason.clone().unwrap_or_default();
                let message = w.message.clone().unwrap_or_default();
                self.set(SYNCHRONIZED, "False", &reason, message, now);
            }
            None => self.drop_reasons(SYNCHRONIZED, &IMAGE_PULL_REASONS),
        }
    }

    fn into_list(self) -> Option<Vec<VirtualMachineInstanceCondition>> {
        (!self.list.is_empty()).then_some(self.list)
    }
}

#[cfg(test)]
mod tests;
