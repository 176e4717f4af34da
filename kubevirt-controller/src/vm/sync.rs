//! One sync of a VM as a pure function of what the controller observed: which action to take on
//! its instance and the status to write (upstream's `syncRunStrategy` and status update).
//!
//! State-change requests (`status.stateChangeRequests`, what `virtctl start|stop|restart` add)
//! form a queue: requests already carried out are dropped from its head, then the head request,
//! if any, is acted on before the run strategy's own rule.

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::cdi::v1beta1::DataVolume;
use kubevirt_api::core::v1::{
    VirtualMachine, VirtualMachineCondition, VirtualMachineInstance,
    VirtualMachineStateChangeRequest, VirtualMachineStatus,
};

use super::backoff;
use super::instance::{condition, ever_ran, is_deleting, is_final, phase, uid};
use super::printable::{Facts, Intent, StorageFacts, printable_status};
use super::storage::{self, Storage};
use super::strategy::RunStrategy;

/// What to do to the VM's instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Create the instance from the template (paused if a start request asked for it).
    Create {
        /// Start it paused.
        paused: bool,
    },
    /// Delete the instance with this UID.
    Delete {
        /// Its UID (a precondition of the delete).
        uid: String,
    },
    /// Switch `spec` to this strategy: a Halted VM that was asked to start becomes Always.
    SetStrategy(RunStrategy),
}

/// The outcome of one sync.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// What to do.
    pub action: Action,
    /// The status to write.
    pub status: VirtualMachineStatus,
    /// Sync again at this time (a failed start's backoff ends, storage is awaited).
    pub requeue_at: Option<Timestamp>,
    /// The DataVolumes of the VM's templates to create (they do not exist yet).
    pub create_data_volumes: Vec<DataVolume>,
}

/// What one sync looks at.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The VM.
    pub vm: &'a VirtualMachine,
    /// Its instance (same name and namespace), if one exists.
    pub vmi: Option<&'a VirtualMachineInstance>,
    /// The time now.
    pub now: Timestamp,
    /// A number in [0, 1) for the backoff's jitter.
    pub jitter: f64,
    /// The DataVolumes and claims its volumes name that exist.
    pub storage: &'a Storage<'a>,
}

/// While storage is awaited the VM is synced again this often (claims it does not own bind
/// without telling it).
const STORAGE_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// The Failure condition's reason when a restored memory state cannot be resumed (ours).
pub const MEMORY_STATE_MISMATCH: &str = "MemoryStateMismatch";

const START: &str = "Start";
const STOP: &str = "Stop";

/// Plans one sync.
pub fn plan(o: Observed<'_>) -> Plan {
    let old = o.vm.status.clone().unwrap_or_default();
    let mut requests: VecDeque<_> = old.state_change_requests.clone().unwrap_or_default().into();
    while requests.front().is_some_and(|r| carried_out(r, o.vmi)) {
        requests.pop_front();
    }
    let strategy = RunStrategy::of(&o.vm.spec);
    let mut start_failure = old.start_failure.clone();
    if let Some(v) = o.vmi {
        if ever_ran(v) {
            start_failure = None;
        } else if is_final(v) && !uid(v).is_empty() {
            start_failure = Some(backoff::record(
                start_failure.as_ref(),
                uid(v),
                o.now,
                o.jitter,
            ));
        }
    }
    if matches!(strategy, Ok(RunStrategy::Manual | RunStrategy::Halted)) {
        start_failure = None;
    }
    let vm_deleting = o.vm.metadata.deletion_timestamp.is_some();
    let create_data_volumes = if vm_deleting {
        Vec::new()
    } else {
        storage::missing(o.vm, o.storage)
    };
    let volumes_ready = storage::templates_ready(o.vm, o.storage);
    let mut held_by_storage = false;
    let mut requeue_at = None;
    let mut failure = None;
    let action = match &strategy {
        Err(e) => {
            failure = Some(("InvalidRunStrategy", e.to_string()));
            Action::None
        }
        // Deleting the VM deletes its instance through the owner reference.
        Ok(_) if vm_deleting => Action::None,
        Ok(RunStrategy::WaitAsReceiver) => {
            failure = Some((
                "UnsupportedRunStrategy",
                "spec.runStrategy: WaitAsReceiver (decentralized live migration) is not supported"
                    .to_string(),
            ));
            Action::None
        }
        Ok(s) => {
            let s = *s;
            let held = if s.backs_off() {
                backoff::holds_until(start_failure.as_ref(), o.now)
            } else {
                None
            };
            let mut create = |paused| match held {
                Some(t) => {
                    requeue_at = Some(t);
                    Action::None
                }
                // The template's DataVolumes are populated first.
                None if !volumes_ready => {
                    held_by_storage = true;
                    Action::None
                }
                None => Action::Create { paused },
            };
            decide(
                s,
                o.vmi,
                &mut requests,
                old.run_strategy.as_deref(),
                &mut create,
            )
        }
    };

    // A restore holds the VM: nothing starts it until the restore lets go (upstream's VM
    // controller skips a VM whose status.restoreInProgress is set).
    let action = match action {
        Action::Create { .. } | Action::SetStrategy(_)
            if crate::snapshot::lock::restore_holds(o.vm) =>
        {
            Action::None
        }
        a => a,
    };
    // A VM restored with a memory state resumes it only on the disks and the machine it was
    // taken with; anything else is refused, saying why, rather than booted or resumed wrongly.
    let action = match action {
        Action::Create { .. } => match crate::snapshot::memory::resume_check(o.vm) {
            Err(why) => {
                failure = Some((MEMORY_STATE_MISMATCH, why));
                Action::None
            }
            Ok(_) => action,
        },
        a => a,
    };
    let intent = match action {
        Action::Create { .. } | Action::SetStrategy(_) => Intent::Start,
        Action::Delete { .. } => Intent::Stop,
        Action::None if held_by_storage => Intent::Start,
        Action::None => Intent::Keep,
    };
    let waiting_for_binding = strategy
        .as_ref()
        .is_ok_and(|s| set_to_start(*s, o.vmi, &requests))
        && storage::unbound_claim(o.vm, o.storage);
    if held_by_storage || waiting_for_binding {
        let poll = o.now + STORAGE_POLL;
        requeue_at = Some(requeue_at.map_or(poll, |t: Timestamp| t.min(poll)));
    }
    let crash_looping = strategy.as_ref().is_ok_and(|s| s.backs_off())
        && start_failure
            .as_ref()
            .and_then(|f| f.consecutive_fail_count)
            .is_some_and(|c| c > 0);
    // Why the last start failed stays visible while the VM backs off (its VMI is gone by then).
    if failure.is_none() && crash_looping {
        failure = start_failure_reason(&old, o.vmi);
    }
    let printable = printable_status(Facts {
        vm_deleting,
        vmi: o.vmi,
        intent,
        crash_looping,
        storage: StorageFacts {
            data_volume_error: storage::data_volume_error(o.vm, o.storage).is_some(),
            provisioning: storage::provisioning(o.vm, o.storage),
            waiting_for_binding,
        },
    });
    let live = o.vmi.filter(|v| !is_final(v) && !is_deleting(v));
    let ready = live.is_some_and(|v| {
        phase(v) == "Running" && condition(v, "Ready").is_some_and(|(s, _)| s == "True")
    });
    let mut status = old.clone();
    status.printable_status = Some(printable.into());
    status.created = Some(o.vmi.is_some());
    status.ready = Some(ready);
    status.run_strategy = strategy
        .map(|s| s.as_str().into())
        .ok()
        .or(old.run_strategy.clone());
    status.state_change_requests = (!requests.is_empty()).then(|| requests.into());
    status.start_failure = start_failure;
    status.observed_generation = o.vm.metadata.generation;
    status.desired_generation = o.vm.metadata.generation;
    status.conditions = Some(conditions(&old, o.vmi, ready, failure, o.now));
    Plan {
        action,
        status,
        requeue_at,
        create_data_volumes,
    }
}

/// Whether the strategy wants an instance running now (upstream's `isSetToStart`).
fn set_to_start(
    s: RunStrategy,
    vmi: Option<&VirtualMachineInstance>,
    requests: &VecDeque<VirtualMachineStateChangeRequest>,
) -> bool {
    match (s, vmi) {
        (RunStrategy::Always, _) => true,
        (RunStrategy::Halted | RunStrategy::WaitAsReceiver, _) => false,
        (RunStrategy::Manual, Some(v)) | (RunStrategy::Once, Some(v)) => !is_final(v),
        (RunStrategy::Manual, None) => requests.front().is_some_and(|r| r.action == START),
        (RunStrategy::RerunOnFailure, Some(v)) => phase(v) != "Succeeded",
        (RunStrategy::RerunOnFailure | RunStrategy::Once, None) => true,
    }
}

/// The reason of a failed start: the failed instance's own, else the one recorded before.
fn start_failure_reason(
    old: &VirtualMachineStatus,
    vmi: Option<&VirtualMachineInstance>,
) -> Option<(&'static str, String)> {
    let from_vmi = vmi.filter(|v| is_final(v) && !ever_ran(v)).map(|v| {
        v.status
            .as_ref()
            .and_then(|s| s.reason.clone())
            .unwrap_or_else(|| format!("the VMI ended {} without running", phase(v)))
    });
    let recorded = || {
        old.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failure" && c.reason.as_deref() == Some(FAILED_START))
            .and_then(|c| c.message.clone())
    };
    from_vmi.or_else(recorded).map(|m| (FAILED_START, m))
}

/// The Failure condition's reason while starts fail.
const FAILED_START: &str = "FailedStart";

/// Whether a request needs nothing more: a Stop once no instance with its UID exists, a Start
/// once a live instance exists; requests of unknown actions are dropped.
fn carried_out(r: &VirtualMachineStateChangeRequest, vmi: Option<&VirtualMachineInstance>) -> bool {
    match r.action.as_str() {
        STOP => match (vmi, r.uid.as_deref()) {
            (None, _) => true,
            (Some(v), Some(u)) => uid(v) != u,
            (Some(_), None) => false,
        },
        START => vmi.is_some_and(|v| !is_final(v) && !is_deleting(v)),
        _ => true,
    }
}

fn decide(
    s: RunStrategy,
    vmi: Option<&VirtualMachineInstance>,
    requests: &mut VecDeque<VirtualMachineStateChangeRequest>,
    last_strategy: Option<&str>,
    create: &mut impl FnMut(bool) -> Action,
) -> Action {
    // An instance on its way out is waited for.
    if vmi.is_some_and(is_deleting) {
        return Action::None;
    }
    let delete = |v: &VirtualMachineInstance| Action::Delete {
        uid: uid(v).to_string(),
    };
    if let Some(head) = requests.front() {
        match (head.action.as_str(), vmi) {
            // Not carried out, so the instance is there.
            (STOP, Some(v)) => return delete(v),
            (START, _) if s == RunStrategy::Halted => {
                // Kept in the queue: the Always sync that follows starts (paused, if asked).
                return Action::SetStrategy(RunStrategy::Always);
            }
            (START, Some(v)) => return delete(v),
            (START, None) => {
                let paused = head
                    .data
                    .as_ref()
                    .and_then(|d| d.get("paused"))
                    .is_some_and(|p| p == "true");
                return create(paused);
            }
            _ => {}
        }
    }
    match (s, vmi) {
        (RunStrategy::Always | RunStrategy::Once, None) => create(false),
        (RunStrategy::Always, Some(v)) if is_final(v) => delete(v),
        (RunStrategy::RerunOnFailure, None) if last_strategy != Some("RerunOnFailure") => {
            create(false)
        }
        (RunStrategy::RerunOnFailure, Some(v)) if phase(v) == "Failed" => {
            requests.push_back(VirtualMachineStateChangeRequest {
                action: START.into(),
                data: None,
                uid: None,
            });
            delete(v)
        }
        (RunStrategy::RerunOnFailure, Some(v)) if phase(v) == "Succeeded" => delete(v),
        (RunStrategy::Halted, Some(v)) => delete(v),
        _ => Action::None,
    }
}

/// Ready (mirrors the instance), Paused (the instance's, while true) and Failure (while the spec
/// cannot be acted on); a condition keeps its transition time while its status stays.
fn conditions(
    old: &VirtualMachineStatus,
    vmi: Option<&VirtualMachineInstance>,
    ready: bool,
    failure: Option<(&str, String)>,
    now: Timestamp,
) -> Vec<VirtualMachineCondition> {
    let previous: BTreeMap<&str, &VirtualMachineCondition> = old
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.as_str(), c))
        .collect();
    let make = |type_: &str, status: bool, reason: Option<String>, message: Option<String>| {
        let status = if status { "True" } else { "False" }.to_string();
        let since = previous
            .get(type_)
            .filter(|p| p.status == status)
            .and_then(|p| p.last_transition_time.clone())
            .unwrap_or(Time(now));
        VirtualMachineCondition {
            type_: type_.into(),
            status,
            reason,
            message,
            last_transition_time: Some(since),
            last_probe_time: None,
        }
    };
    let ready_reason = match vmi {
        None => "VMINotExists".to_string(),
        Some(v) => condition(v, "Ready")
            .and_then(|(_, r)| r)
            .map(str::to_string)
            .unwrap_or_else(|| if ready { "VMIReady" } else { "VMINotReady" }.into()),
    };
    let mut out = vec![make("Ready", ready, Some(ready_reason), None)];
    // Copied from the instance's as upstream copies its conditions: its reason (PausedByUser,
    // PausedIOError) and message with it.
    let paused = vmi
        .and_then(|v| v.status.as_ref()?.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Paused" && c.status == "True"));
    if let Some(p) = paused {
        out.push(make("Paused", true, p.reason.clone(), p.message.clone()));
    }
    if let Some((reason, message)) = failure {
        out.push(make("Failure", true, Some(reason.into()), Some(message)));
    }
    out
}

#[cfg(test)]
mod tests;
