//! One sync of a VirtualMachineInstanceMigration as a pure function of what the controller
//! observed: the VMIM, its VMI (or none), the VMI's launcher pods and the time. It says what to
//! do (create or delete the target pod, write the VMI's `migrationState`) and the VMIM status to
//! write. The phases and who moves them are in [`super`].

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::core::v1::{
    VirtualMachineInstance, VirtualMachineInstanceMigration,
    VirtualMachineInstanceMigrationCondition,
    VirtualMachineInstanceMigrationPhaseTransitionTimestamp, VirtualMachineInstanceMigrationState,
    VirtualMachineInstanceMigrationStatus,
};

use super::active::{active_pod, migration_of};
use super::phase::{self, is_final};
use crate::vm::instance::{is_deleting, phase as vmi_phase};
use crate::vmi::pod_state;

/// How long a target pod may stay unschedulable before the migration fails (upstream's
/// default `unschedulablePendingTimeoutSeconds`).
pub const UNSCHEDULABLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a target pod may take to run at all (upstream's `catchAllPendingTimeoutSeconds`).
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(900);

/// Something to do for the migration.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Create the target pod.
    CreateTargetPod,
    /// Delete this pod if it still has this uid.
    DeletePod {
        /// Its name.
        name: String,
        /// Its uid.
        uid: String,
    },
    /// Make this the VMI's `status.migrationState` (the whole of it).
    SetVmiState(Box<VirtualMachineInstanceMigrationState>),
}

/// What the VMIM's own metadata needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metadata {
    /// Nothing.
    Keep,
    /// Add upstream's finalizer ([`super::FINALIZER`]) and the `kubevirt.io/vmi-name` label
    /// ([`super::VMI_NAME_LABEL`]) that are missing: a migration that has not ended stays
    /// until its abort is settled, and `virtctl migrate-cancel` finds it by its VMI.
    Claim,
    /// Remove the finalizer: the migration ended (after the status is written).
    Release,
}

/// The outcome of one sync.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What to do, in order.
    pub steps: Vec<Step>,
    /// The VMIM status to write.
    pub status: VirtualMachineInstanceMigrationStatus,
    /// What the VMIM's metadata needs.
    pub metadata: Metadata,
}

/// Plans one sync of `vmim`, whose VMI is `vmi` (by `spec.vmiName`) with launcher pods `pods`.
pub fn plan(
    vmim: &VirtualMachineInstanceMigration,
    vmi: Option<&VirtualMachineInstance>,
    pods: &[Pod],
    now: Timestamp,
) -> Plan {
    let uid = vmim.metadata.uid.clone().unwrap_or_default();
    let old = vmim.status.clone().unwrap_or_default();
    let mut sync = Sync {
        uid: uid.clone(),
        status: old.clone(),
        steps: Vec::new(),
        now,
    };
    let target = pods
        .iter()
        .filter(|p| migration_of(p) == Some(uid.as_str()))
        .min_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let current = old.phase.clone().unwrap_or_default();
    if is_final(&current) {
        // A failed migration's target pod goes (its launcher never got the guest).
        if current == phase::FAILED {
            sync.delete_target(target);
        }
        return sync.into_plan(&old, vmim);
    }
    let deleting = vmim.metadata.deletion_timestamp.is_some();
    let name = vmim.spec.vmi_name.clone().unwrap_or_default();
    let namespace = vmim.metadata.namespace.clone().unwrap_or_default();
    let Some(vmi) = vmi else {
        sync.fail(
            target,
            None,
            format!("VirtualMachineInstance {namespace}/{name} does not exist"),
        );
        return sync.into_plan(&old, vmim);
    };
    let state = vmi.status.as_ref().and_then(|s| s.migration_state.as_ref());
    let ours = state.filter(|m| m.migration_uid.as_deref() == Some(uid.as_str()));
    let done = ours.is_some_and(|m| m.completed == Some(true) && m.failed != Some(true));
    if !done && (is_deleting(vmi) || vmi_phase(vmi) != "Running") {
        let why = format!(
            "VirtualMachineInstance {name} is not running (phase {}): only a running VMI can be migrated",
            non_empty(vmi_phase(vmi))
        );
        sync.fail(target, ours, why);
        return sync.into_plan(&old, vmim);
    }
    if deleting && ours.is_none() {
        // Cancelled before the VMI was handed to the agents: nothing runs yet, it just ends
        // (upstream's "Migration failed due to being canceled"), its target pod with it.
        sync.abort_requested();
        sync.fail(target, ours, CANCELLED.into());
        return sync.into_plan(&old, vmim);
    }
    match current.as_str() {
        "" | phase::PENDING => {
            let busy = state.is_some_and(|m| {
                m.migration_uid.as_deref() != Some(uid.as_str())
                    && m.completed != Some(true)
                    && m.failed != Some(true)
            });
            if busy {
                // One migration of a VMI at a time: this one waits for the other's end.
                sync.status.phase = Some(phase::PENDING.into());
            } else if target.is_some() {
                sync.status.phase = Some(phase::SCHEDULING.into());
            } else {
                sync.steps.push(Step::CreateTargetPod);
                sync.status.phase = Some(phase::SCHEDULING.into());
            }
        }
        phase::SCHEDULING | phase::SCHEDULED => match target {
            None => sync.fail(None, ours, "the migration's target pod was deleted".into()),
            Some(pod) => sync.scheduling(vmi, pods, pod),
        },
        _ => match (target, ours) {
            (_, Some(m)) if m.failed == Some(true) => {
                let why = m
                    .failure_reason
                    .clone()
                    .unwrap_or_else(|| "the node agents failed the migration".into());
                sync.fail(target, None, why);
            }
            (_, Some(m)) if done => {
                // The target's agent has taken the VMI over once it found the guest running
                // there and the VMI names the target's node.
                let node = vmi.status.as_ref().and_then(|s| s.node_name.as_deref());
                let detected = m.target_node_domain_detected == Some(true);
                if detected && node.is_some() && node == m.target_node.as_deref() {
                    sync.status.phase = Some(phase::SUCCEEDED.into());
                }
            }
            (None, _) => sync.fail(None, ours, "the migration's target pod was deleted".into()),
            (Some(pod), _) if pod_down(pod).is_some() => {
                let why = pod_down(pod).unwrap_or_default();
                sync.fail(Some(pod), ours, why);
            }
            (Some(pod), None) => {
                // Our state was not written (or was replaced): write it again.
                sync.set_state(vmi, pods, pod);
            }
            (Some(_), Some(m)) => {
                if m.target_node_address.is_some() && current == phase::PREPARING_TARGET {
                    sync.status.phase = Some(phase::TARGET_READY.into());
                }
                if m.start_timestamp.is_some() {
                    sync.status.phase = Some(phase::RUNNING.into());
                }
            }
        },
    }
    if let Some(m) = ours {
        sync.status.migration_state = Some(m.clone());
        if deleting && !is_final(sync.status.phase.as_deref().unwrap_or("")) {
            // Handed to the agents: the source's agent cancels its launcher's migration and
            // settles the VMI's abortStatus; the migration then fails (or it completed first).
            sync.abort_requested();
            if m.abort_requested != Some(true) && m.completed != Some(true) {
                let mut aborting = m.clone();
                aborting.abort_requested = Some(true);
                sync.steps
                    .push(Step::SetVmiState(Box::new(aborting.clone())));
                sync.status.migration_state = Some(aborting);
            }
        }
    }
    sync.into_plan(&old, vmim)
}

/// The failure reason of a migration cancelled before it ran (upstream's event message).
pub const CANCELLED: &str = "Migration failed due to being canceled";
/// The VMIM condition of a migration asked to abort (upstream's
/// `VirtualMachineInstanceMigrationAbortRequested`).
pub const ABORT_REQUESTED: &str = "migrationAbortRequested";

struct Sync {
    uid: String,
    status: VirtualMachineInstanceMigrationStatus,
    steps: Vec<Step>,
    now: Timestamp,
}

impl Sync {
    /// The target pod waits for a node, then runs: the VMI learns where its guest goes.
    fn scheduling(&mut self, vmi: &VirtualMachineInstance, pods: &[Pod], pod: &Pod) {
        if let Some(why) = pod_down(pod) {
            return self.fail(Some(pod), None, why);
        }
        let age = pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(Duration::ZERO, |t| since(t.0, self.now));
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
        if node.is_some() && running {
            return self.set_state(vmi, pods, pod);
        }
        if let Some(since_when) = unschedulable(pod)
            && since(since_when.0, self.now) >= UNSCHEDULABLE_TIMEOUT
        {
            return self.fail(
                Some(pod),
                None,
                format!(
                    "the target pod stayed unschedulable for {} s",
                    UNSCHEDULABLE_TIMEOUT.as_secs()
                ),
            );
        }
        if age >= PENDING_TIMEOUT {
            return self.fail(
                Some(pod),
                None,
                format!(
                    "the target pod did not run within {} s",
                    PENDING_TIMEOUT.as_secs()
                ),
            );
        }
        self.status.phase = Some(phase::SCHEDULING.into());
    }

    /// The VMI's `migrationState` for this migration, new: the agents take it from here.
    fn set_state(&mut self, vmi: &VirtualMachineInstance, pods: &[Pod], pod: &Pod) {
        let status = vmi.status.as_ref();
        let state = VirtualMachineInstanceMigrationState {
            migration_uid: Some(self.uid.clone()),
            source_node: status.and_then(|s| s.node_name.clone()),
            source_pod: active_pod(vmi, pods).and_then(|p| p.metadata.name.clone()),
            target_node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_pod: pod.metadata.name.clone(),
            completed: Some(false),
            failed: Some(false),
            ..Default::default()
        };
        self.steps.push(Step::SetVmiState(Box::new(state.clone())));
        self.status.migration_state = Some(state);
        self.status.phase = Some(phase::PREPARING_TARGET.into());
    }

    fn delete_target(&mut self, target: Option<&Pod>) {
        if let Some(p) =
            target.filter(|p| p.metadata.deletion_timestamp.is_none() && !pod_state::is_final(p))
        {
            self.steps.push(Step::DeletePod {
                name: p.metadata.name.clone().unwrap_or_default(),
                uid: p.metadata.uid.clone().unwrap_or_default(),
            });
        }
    }

    /// Fails the migration with `why`: its target pod goes, and a VMI state of it that has not
    /// ended says failed (the source's agent cancels, the target's stops its launcher).
    fn fail(
        &mut self,
        target: Option<&Pod>,
        ours: Option<&VirtualMachineInstanceMigrationState>,
        why: String,
    ) {
        self.status.phase = Some(phase::FAILED.into());
        self.delete_target(target);
        let now = Some(Time(self.now));
        let mut state = match ours {
            Some(m) => m.clone(),
            None => self.status.migration_state.clone().unwrap_or_else(|| {
                VirtualMachineInstanceMigrationState {
                    migration_uid: Some(self.uid.clone()),
                    ..Default::default()
                }
            }),
        };
        if state.failed != Some(true) {
            state.failed = Some(true);
            state.completed = Some(true);
            state.failure_reason = Some(why);
            state.end_timestamp = state.end_timestamp.or(now);
            if ours.is_some_and(|m| m.failed != Some(true)) {
                self.steps.push(Step::SetVmiState(Box::new(state.clone())));
            }
        }
        self.status.migration_state = Some(state);
    }

    /// Marks the VMIM as asked to abort (once).
    fn abort_requested(&mut self) {
        let conditions = self.status.conditions.get_or_insert_with(Vec::new);
        if conditions.iter().any(|c| c.type_ == ABORT_REQUESTED) {
            return;
        }
        conditions.push(VirtualMachineInstanceMigrationCondition {
            type_: ABORT_REQUESTED.into(),
            status: "True".into(),
            last_probe_time: Some(Time(self.now)),
            last_transition_time: Some(Time(self.now)),
            reason: None,
            message: None,
        });
    }

    fn into_plan(
        mut self,
        old: &VirtualMachineInstanceMigrationStatus,
        vmim: &VirtualMachineInstanceMigration,
    ) -> Plan {
        let finalized = vmim
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == super::FINALIZER);
        let labelled = vmim
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(super::VMI_NAME_LABEL));
        let ended = is_final(self.status.phase.as_deref().unwrap_or(""));
        let metadata = match (ended, finalized) {
            (true, true) => Metadata::Release,
            (false, false) if vmim.metadata.deletion_timestamp.is_none() => Metadata::Claim,
            (false, true) if !labelled && vmim.metadata.deletion_timestamp.is_none() => {
                Metadata::Claim
            }
            _ => Metadata::Keep,
        };
        if self.status.phase != old.phase
            && let Some(p) = &self.status.phase
        {
            self.status
                .phase_transition_timestamps
                .get_or_insert_with(Vec::new)
                .push(VirtualMachineInstanceMigrationPhaseTransitionTimestamp {
                    phase: Some(p.clone()),
                    phase_transition_timestamp: Some(Time(self.now)),
                });
        }
        Plan {
            steps: self.steps,
            status: self.status,
            metadata,
        }
    }
}

fn non_empty(s: &str) -> &str {
    if s.is_empty() { "none" } else { s }
}

fn since(then: Timestamp, now: Timestamp) -> Duration {
    now.duration_since(then)
        .try_into()
        .unwrap_or(Duration::ZERO)
}

/// Why the target pod is down, if it is.
fn pod_down(p: &Pod) -> Option<String> {
    pod_state::down(p, "the target pod")
}

/// Since when the scheduler has said the pod cannot be placed.
fn unschedulable(p: &Pod) -> Option<&Time> {
    pod_state::unschedulable(p)?.last_transition_time.as_ref()
}

#[cfg(test)]
mod tests;
