//! What the node agent writes on a VMI, from what its launcher reports: the phase as upstream's
//! virt-handler sets it, `nodeName`, the Ready and Paused conditions, the guest's interfaces and
//! the phase transition history; and the `IOerror` event upstream records when a disk's error
//! policy pauses the VMI. Pure functions, so every mapping is tested without a VM.

use jiff::Timestamp;
use kubevirt_api::core::v1::VirtualMachineInstance;

use crate::events::Note;
use kubevirt_launcher_protocol::{ExitStatus, FinalStatus, Phase, Status};
use serde_json::{Value, json};

/// Label upstream puts on a VMI: the node it runs on.
pub const NODE_NAME_LABEL: &str = "kubevirt.io/nodeName";

/// The Paused condition's reason and message (upstream virt-handler's) when a disk's error
/// policy paused the VMI; the disk and its error are the `IOerror` event's.
const PAUSED_IO_ERROR: (&str, &str) = (
    "PausedIOError",
    "VMI was paused, low-level IO error detected",
);
/// ... and when its user paused it.
const PAUSED_BY_USER: (&str, &str) = ("PausedByUser", "VMI was paused by user");

/// What the agent knows about a VMI's launcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Started; its control socket does not answer yet.
    Launching,
    /// Its control socket's answer (boxed: a status with its migration progress is far larger
    /// than the other variants).
    Status(Box<Status>),
    /// It exited.
    Exited {
        /// The exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// The final status it left in its run directory (`None`: it left none, e.g. killed).
        last: Option<FinalStatus>,
    },
    /// It answered in a way this agent cannot use (another protocol version, or no valid reply).
    Incompatible(String),
    /// The agent could not start the launcher waiting in the VMI's pod (its pod network could
    /// not be prepared, or the launcher refused the VMI): the VMI fails with this reason.
    StartFailed(String),
    /// A VMI that ran has no launcher any more and its run directory no final status: the
    /// launcher died (killed, or crashed) while no agent watched it.
    Lost,
}

impl Report {
    /// Whether the launcher handed its guest to a migration's target, which runs it now: it
    /// exited so, or its VM ended so and it is finishing (for up to seconds: it lets the
    /// target's go-ahead out and drains the console first). Nothing of it goes on the VMI
    /// then: its phase (Succeeded) is its own run's, not the VMI's.
    pub fn handed_over(&self) -> bool {
        match self {
            Report::Exited { last: Some(f), .. } => f.exit == ExitStatus::Migrated,
            Report::Status(s) => s.migrated_away,
            _ => false,
        }
    }
}

/// The merge patch that brings `vmi` in line with `report` on `node`, or `None` if it already is.
pub fn patch(
    vmi: &VirtualMachineInstance,
    node: &str,
    report: &Report,
    now: Timestamp,
) -> Option<Value> {
    let io_error = match report {
        Report::Status(s) if s.paused => s.io_error.clone(),
        _ => None,
    };
    let (phase, reason, paused, interfaces) = match report {
        Report::Launching => (Phase::Scheduled, None, false, vec![]),
        Report::Status(s) => (
            // A launcher waiting in its pod for `start`: nothing runs yet.
            if s.phase == Phase::Waiting {
                Phase::Scheduled
            } else {
                s.phase
            },
            s.reason.clone(),
            s.paused,
            s.guest.interfaces.clone(),
        ),
        Report::Exited { code, last } => {
            let (phase, reason) = exit_outcome(*code, last.as_ref());
            (phase, reason, false, vec![])
        }
        Report::Incompatible(why) => (
            Phase::Failed,
            Some(format!("the node agent cannot use its launcher: {why}")),
            false,
            vec![],
        ),
        Report::StartFailed(why) => (Phase::Failed, Some(why.clone()), false, vec![]),
        Report::Lost => (
            Phase::Failed,
            Some(
                "the VMI's launcher is gone and left no final status (it was killed or crashed \
                 while the node agent was down)"
                    .into(),
            ),
            false,
            vec![],
        ),
    };
    let phase = phase.as_str();
    let old = vmi.status.clone().unwrap_or_default();
    let mut transitions: Vec<Value> = old
        .phase_transition_timestamps
        .iter()
        .flatten()
        .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
        .collect();
    if old.phase.as_deref() != Some(phase) {
        transitions.push(json!({"phase": phase, "phaseTransitionTimestamp": now.to_string()}));
    }
    let mut conditions = vec![json!({
        "type": "Ready",
        "status": if phase == "Running" && !paused { "True" } else { "False" },
    })];
    if paused {
        // A disk's error policy paused it, or its user did (upstream's reasons and messages).
        let (reason, message) = if io_error.is_some() {
            PAUSED_IO_ERROR
        } else {
            PAUSED_BY_USER
        };
        conditions.push(
            json!({"type": "Paused", "status": "True", "reason": reason, "message": message}),
        );
    }
    // Keep the transition time of a condition whose status did not change.
    for c in &mut conditions {
        let since = old
            .conditions
            .iter()
            .flatten()
            .find(|o| {
                Some(o.type_.as_str()) == c["type"].as_str()
                    && Some(o.status.as_str()) == c["status"].as_str()
            })
            .and_then(|o| o.last_transition_time.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| now.to_string());
        c["lastTransitionTime"] = since.into();
    }
    let interfaces: Vec<Value> = interfaces
        .iter()
        .map(|i| {
            let mut v = json!({"name": i.name, "mac": i.mac, "infoSource": "domain"});
            if let Some(ip) = &i.guest_ip {
                v["ipAddress"] = ip.clone().into();
                v["ipAddresses"] = json!([ip]);
            }
            v
        })
        .collect();
    let status = json!({
        "phase": phase,
        "reason": reason,
        "nodeName": node,
        "conditions": conditions,
        "phaseTransitionTimestamps": transitions,
        "interfaces": interfaces,
    });
    let current = serde_json::to_value(&old).unwrap_or(Value::Null);
    let same = ["phase", "reason", "nodeName", "conditions", "interfaces"]
        .iter()
        .all(|k| normalized(&current[*k]) == normalized(&status[*k]));
    let labelled = vmi
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(NODE_NAME_LABEL))
        .is_some_and(|n| n == node);
    if same && labelled {
        return None;
    }
    Some(json!({"metadata": {"labels": {NODE_NAME_LABEL: node}}, "status": status}))
}

/// The Warning `IOerror` event upstream's virt-launcher sends when a disk's error policy pauses
/// the VMI, naming the volume (a disk is named as its volume) and telling a full disk apart:
/// once, when `report` says paused for a disk error and `vmi` does not show that yet. The
/// launcher reports the error as the VMM's `disk <name>: <what the backend said>`.
pub fn io_error_event(vmi: &VirtualMachineInstance, report: &Report) -> Option<Note> {
    let Report::Status(s) = report else {
        return None;
    };
    let error = s.io_error.as_deref().filter(|_| s.paused)?;
    let shown = vmi
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| {
            c.type_ == "Paused"
                && c.status == "True"
                && c.reason.as_deref() == Some(PAUSED_IO_ERROR.0)
        });
    if shown {
        return None;
    }
    let (volume, what) = error
        .strip_prefix("disk ")
        .and_then(|e| e.split_once(": "))
        .unwrap_or(("", error));
    // Rust's io::Error ends its text with the errno.
    let no_space = format!("(os error {})", libc::ENOSPC);
    let message = if what.contains(&no_space) {
        format!("VM Paused due to not enough space on volume: {volume}")
    } else {
        format!("VM Paused due to IO error at the volume: {volume}")
    };
    Some(Note::warning("IOerror", message))
}

/// Empty lists and nulls compare equal to absent fields.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.is_empty() => Value::Null,
        other => other.clone(),
    }
}

/// The phase and reason of a launcher that exited: its final status says; without one (it was
/// killed, or crashed before writing it) its exit code does.
fn exit_outcome(code: Option<i32>, last: Option<&FinalStatus>) -> (Phase, Option<String>) {
    let exit = last
        .map(|l| l.exit)
        .or_else(|| code.and_then(ExitStatus::from_code));
    let Some(exit) = exit else {
        let what = match code {
            Some(c) => format!("the launcher failed (exit code {c})"),
            None => "the launcher was killed".to_string(),
        };
        return (Phase::Failed, Some(what));
    };
    if exit == ExitStatus::Succeeded {
        return (Phase::Succeeded, None);
    }
    let reason = match last.and_then(|l| l.reason.as_deref()) {
        Some(why) => format!("{}: {why}", exit.describe()),
        None => exit.describe().to_string(),
    };
    (exit.phase(), Some(reason))
}

#[cfg(test)]
mod tests;
