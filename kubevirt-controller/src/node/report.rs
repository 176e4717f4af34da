//! What the node agent writes on a VMI, from what its launcher reports: the phase as upstream's
//! virt-handler sets it, `nodeName`, the Ready and Paused conditions, the guest's interfaces and
//! the phase transition history. A pure function, so every mapping is tested without a VM.

use jiff::Timestamp;
use kubevirt_api::core::v1::VirtualMachineInstance;
use serde::Deserialize;
use serde_json::{Value, json};

/// Label upstream puts on a VMI: the node it runs on.
pub const NODE_NAME_LABEL: &str = "kubevirt.io/nodeName";

/// A guest interface as the launcher's control API reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestInterface {
    /// The VMI's interface name.
    #[serde(default)]
    pub name: String,
    /// Its MAC address.
    #[serde(default)]
    pub mac: String,
    /// The address the guest was given.
    #[serde(default)]
    pub guest_ip: Option<String>,
}

/// The launcher's `status` answer (the parts the VMI shows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct LauncherStatus {
    /// Scheduled, Running, Succeeded or Failed.
    pub phase: String,
    /// Why, for Failed.
    #[serde(default)]
    pub reason: Option<String>,
    /// The vCPUs are paused.
    #[serde(default)]
    pub paused: bool,
    /// What the guest shows.
    #[serde(default)]
    pub guest: GuestInfo,
}

/// The `guest` part of [`LauncherStatus`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct GuestInfo {
    /// Its network interfaces.
    #[serde(default)]
    pub interfaces: Vec<GuestInterface>,
}

/// What the agent knows about a VMI's launcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// Started; its control socket does not answer yet.
    Launching,
    /// Its control socket's answer.
    Status(LauncherStatus),
    /// It exited with this code; `message` is its last word on stderr.
    Exited {
        /// The exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// The launcher's last line on stderr.
        message: Option<String>,
    },
    /// The agent has no launcher for a VMI it had started (it restarted meanwhile).
    Lost,
}

/// The merge patch that brings `vmi` in line with `report` on `node`, or `None` if it already is.
pub fn patch(
    vmi: &VirtualMachineInstance,
    node: &str,
    report: &Report,
    now: Timestamp,
) -> Option<Value> {
    let (phase, reason, paused, interfaces) = match report {
        Report::Launching => ("Scheduled", None, false, vec![]),
        Report::Status(s) => (
            match s.phase.as_str() {
                p @ ("Scheduled" | "Running" | "Succeeded" | "Failed") => p,
                _ => "Failed",
            },
            s.reason.clone(),
            s.paused,
            s.guest.interfaces.clone(),
        ),
        Report::Exited { code: Some(0), .. } => ("Succeeded", None, false, vec![]),
        Report::Exited { code, message } => (
            "Failed",
            Some(exit_reason(*code, message.as_deref())),
            false,
            vec![],
        ),
        Report::Lost => (
            "Failed",
            Some("the node agent lost this VMI's launcher (the agent restarted)".into()),
            false,
            vec![],
        ),
    };
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
        conditions.push(json!({"type": "Paused", "status": "True", "reason": "PausedByUser"}));
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

/// Empty lists and nulls compare equal to absent fields.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.is_empty() => Value::Null,
        other => other.clone(),
    }
}

fn exit_reason(code: Option<i32>, message: Option<&str>) -> String {
    let what = match code {
        Some(1) => "the guest or the VMM failed",
        Some(2) => "the launcher refused the VMI (invalid or not supported)",
        Some(3) => "the launch failed (image, disk or VMM set-up)",
        Some(_) => "the launcher failed",
        None => "the launcher was killed",
    };
    match message {
        Some(m) => format!("{what}: {m}"),
        None => what.to_string(),
    }
}

#[cfg(test)]
mod tests;
