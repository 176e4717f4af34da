//! A VirtualMachineSnapshot's status as upstream's `updateSnapshotStatus` writes it: the phase
//! (InProgress → Succeeded once the content is created, Failed past the failure deadline or when
//! nothing can be copied, Deleting while deleted unfinished), readiness and error mirrored from
//! the content, the Ready/Progressing/Failure conditions, the indications and the volume lists.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kubevirt_api::snapshot::v1beta1::{
    Error, SnapshotVolumesLists, SourceIndication, VirtualMachineSnapshot,
    VirtualMachineSnapshotContent, VirtualMachineSnapshotStatus,
};

use super::conditions::{self, FAILURE, PROGRESSING, READY};
use super::content::volume_lists;
use super::volumes::claim_of;
use super::{DEFAULT_FAILURE_DEADLINE, lock};

/// Phase: the snapshot is being taken.
pub const IN_PROGRESS: &str = "InProgress";
/// Phase: the content is created.
pub const SUCCEEDED: &str = "Succeeded";
/// Phase: the snapshot failed (terminal).
pub const FAILED: &str = "Failed";
/// Phase: deleted before it finished.
pub const DELETING: &str = "Deleting";

/// The Failure condition's reason past the deadline.
pub const DEADLINE_EXCEEDED: &str = "snapshot deadline exceeded";

const ONLINE: &str = "Online";
const NO_GUEST_AGENT: &str = "NoGuestAgent";
const PAUSED: &str = "Paused";
const PARTIAL: &str = "PartialSnapshot";

/// Upstream's text for each indication.
fn indication_message(i: &str) -> &'static str {
    match i {
        ONLINE => {
            "Snapshot taken while the VM was running. Consistency depends on guest-agent quiescing."
        }
        NO_GUEST_AGENT => {
            "Guest agent was not available. Snapshot is crash-consistent and may not be application-consistent."
        }
        PAUSED => {
            "Snapshot taken while the VM was paused. Snapshot is crash-consistent and may not be application-consistent."
        }
        PARTIAL => {
            "Not all snapshotable volumes were included in the snapshot. Check status.snapshotVolumes for excluded volumes and VM VolumeSnapshotStatus for details."
        }
        _ => "Unknown indication",
    }
}

/// What is known of the snapshot's source VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Its UID.
    pub uid: String,
    /// The snapshot holds it.
    pub locked: bool,
    /// Why not, appended to [`lock::NOT_LOCKED`] (empty when nothing more is known).
    pub blocker: String,
    /// Its VMI exists.
    pub online: bool,
    /// Its VMI was paused by its user (not by this controller).
    pub paused: bool,
}

/// What one status computation looks at.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The snapshot.
    pub snapshot: &'a VirtualMachineSnapshot,
    /// Its source, if it exists.
    pub source: Option<&'a Source>,
    /// Its content, if it exists.
    pub content: Option<&'a VirtualMachineSnapshotContent>,
    /// Why the snapshot cannot be taken at all (it fails with this).
    pub failure: Option<&'a str>,
    /// The time now.
    pub now: Timestamp,
}

/// `spec.failureDeadline` (default 5m; `0`: none).
pub fn failure_deadline(s: &VirtualMachineSnapshot) -> Option<Duration> {
    let d = match s.spec.failure_deadline.as_deref() {
        Some(d) => kubevirt_api::duration::parse_go_duration(d).unwrap_or(DEFAULT_FAILURE_DEADLINE),
        None => DEFAULT_FAILURE_DEADLINE,
    };
    (!d.is_zero()).then_some(d)
}

/// When the snapshot fails if still in progress.
pub fn deadline(s: &VirtualMachineSnapshot) -> Option<Timestamp> {
    let created = s.metadata.creation_timestamp.as_ref()?.0;
    let d = SignedDuration::try_from(failure_deadline(s)?).ok()?;
    created.checked_add(d).ok()
}

fn phase(s: &VirtualMachineSnapshot) -> Option<&str> {
    s.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Neither Succeeded nor Failed.
pub fn progressing(s: &VirtualMachineSnapshot) -> bool {
    !matches!(phase(s), Some(SUCCEEDED | FAILED))
}

/// Failed, or in progress past its deadline.
pub fn deadline_exceeded(s: &VirtualMachineSnapshot, now: Timestamp) -> bool {
    phase(s) == Some(FAILED) || (progressing(s) && deadline(s).is_some_and(|d| now > d))
}

/// Deleted, failed or past its deadline: the snapshot lets its VM go.
pub fn terminating(s: &VirtualMachineSnapshot, now: Timestamp) -> bool {
    s.metadata.deletion_timestamp.is_some() || deadline_exceeded(s, now)
}

/// The content is deleted with the snapshot: policy Delete (the default), or never ready.
pub fn deletes_content(
    s: &VirtualMachineSnapshot,
    content: &VirtualMachineSnapshotContent,
) -> bool {
    s.spec
        .deletion_policy
        .as_deref()
        .is_none_or(|p| p == "Delete")
        || content.status.as_ref().and_then(|c| c.ready_to_use) != Some(true)
}

/// The status to write.
pub fn compute(f: Facts<'_>) -> VirtualMachineSnapshotStatus {
    let now = f.now;
    let mut st = f
        .snapshot
        .status
        .clone()
        .unwrap_or_else(|| VirtualMachineSnapshotStatus {
            ready_to_use: Some(false),
            ..Default::default()
        });
    if let Some(s) = f.source {
        st.source_uid = Some(s.uid.clone());
    }
    if let Some(c) = f.content
        && let Some(cs) = &c.status
    {
        st.virtual_machine_snapshot_content_name = c.metadata.name.clone();
        st.creation_time = cs.creation_time.clone();
        st.ready_to_use = cs.ready_to_use;
        st.error = cs.error.clone();
    }
    if let Some(m) = f.failure
        && st.error.as_ref().and_then(|e| e.message.as_deref()) != Some(m)
    {
        st.error = Some(Error {
            message: Some(m.to_string()),
            time: Some(Time(now)),
        });
    }
    let mut probe = f.snapshot.clone();
    probe.status = Some(st.clone());
    let set = |st: &mut VirtualMachineSnapshotStatus, t: &str, on: bool, reason: &str| {
        conditions::set(&mut st.conditions, t, on, reason, now)
    };
    if f.failure.is_some() || deadline_exceeded(&probe, now) {
        st.phase = Some(FAILED.into());
        let why = f
            .failure
            .or_else(|| {
                conditions::get(&st.conditions, FAILURE)
                    .filter(|(s, _)| *s == "True")
                    .map(|(_, r)| r)
            })
            .unwrap_or(DEADLINE_EXCEEDED)
            .to_string();
        set(&mut st, FAILURE, true, &why);
        set(&mut st, PROGRESSING, false, "Operation failed");
    } else if phase(&probe) == Some(SUCCEEDED) || st.creation_time.is_some() {
        st.phase = Some(SUCCEEDED.into());
        set(&mut st, PROGRESSING, false, "Operation complete");
        if let Some(c) = f.content {
            volumes_and_partial(&mut st, c);
        }
    } else {
        st.phase = Some(IN_PROGRESS.into());
        match f.source {
            Some(s) => {
                let msg = if s.locked {
                    lock::LOCKED.to_string()
                } else {
                    format!("{}{}", lock::NOT_LOCKED, s.blocker)
                };
                set(&mut st, PROGRESSING, s.locked, &msg);
                indications(&mut st, s);
            }
            None => set(&mut st, PROGRESSING, false, "Source does not exist"),
        }
        if f.snapshot.metadata.deletion_timestamp.is_some() {
            st.phase = Some(DELETING.into());
            set(&mut st, PROGRESSING, false, "VM snapshot is deleting");
        }
    }
    if st.ready_to_use == Some(true) {
        set(&mut st, READY, true, "Ready");
    } else {
        set(&mut st, READY, false, "Not ready");
    }
    if st.error.is_some() && st.phase.as_deref() != Some(FAILED) {
        set(&mut st, PROGRESSING, false, "In error state");
    }
    st
}

/// Online (+ Paused by its user, or NoGuestAgent: there is no guest agent here); none offline.
fn indications(st: &mut VirtualMachineSnapshotStatus, s: &Source) {
    if !s.online {
        st.indications = None;
        st.source_indications = None;
        return;
    }
    let mut set: BTreeSet<String> = st
        .indications
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    set.insert(ONLINE.into());
    set.insert(if s.paused { PAUSED } else { NO_GUEST_AGENT }.into());
    write_indications(st, set.into_iter().collect());
}

fn write_indications(st: &mut VirtualMachineSnapshotStatus, list: Vec<String>) {
    st.source_indications = Some(
        list.iter()
            .map(|i| SourceIndication {
                indication: i.clone(),
                message: indication_message(i).into(),
            })
            .collect(),
    );
    st.indications = Some(list);
}

/// `snapshotVolumes` from the content, and PartialSnapshot when a claim-backed volume was left
/// out.
fn volumes_and_partial(st: &mut VirtualMachineSnapshotStatus, c: &VirtualMachineSnapshotContent) {
    let (included, excluded) = volume_lists(c);
    let volumes = c
        .spec
        .source
        .virtual_machine
        .as_ref()
        .and_then(|vm| vm.spec.as_ref())
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let partial = volumes
        .iter()
        .any(|v| excluded.contains(&v.name) && claim_of(v).is_some());
    st.snapshot_volumes = Some(SnapshotVolumesLists {
        included_volumes: (!included.is_empty()).then_some(included),
        excluded_volumes: (!excluded.is_empty()).then_some(excluded),
    });
    if partial && !st.indications.iter().flatten().any(|i| i == PARTIAL) {
        let mut list = st.indications.clone().unwrap_or_default();
        list.push(PARTIAL.into());
        write_indications(st, list);
    }
}

#[cfg(test)]
mod tests;
