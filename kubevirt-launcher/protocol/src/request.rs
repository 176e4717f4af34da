//! Requests: `{"op": ..., "version"?: N, ...}`, one per line.

use crate::VERSION;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// What [`Request::Start`] carries: the VMI a launcher started with `serve` (in its
/// virt-launcher pod) is to run, sent by the node agent once it has prepared the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    /// The VirtualMachineInstance as the API server has it (the whole object, defaults applied).
    /// Its uid must be the one the launcher was started for.
    pub vmi: Value,
    /// The node agent has built the pod network's binding in the pod's network namespace (the
    /// bridge, the guest's tap `tap0` owned by the launcher's uid, the NAT rules and
    /// `ip_forward`): the launcher only opens the tap and serves DHCP, and needs no
    /// `CAP_NET_ADMIN`. `false`: the launcher builds the binding itself (it must be allowed to).
    #[serde(default)]
    pub network_prepared: bool,
    /// Resume the guest from the memory-state snapshot `<run-dir>/snapshots/<name>` (placed
    /// there by the node agent) instead of booting it; a name as [`Request::Snapshot`] takes.
    /// Left out: boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
}

/// One control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The guest's phase, pause state, restarts and devices ([`crate::Status`]).
    Status,
    /// Pause the vCPUs.
    Pause,
    /// Resume the vCPUs.
    Unpause,
    /// Press the ACPI power button; stop the VM if the guest still runs after the grace period
    /// (`None`: the VMI's `terminationGracePeriodSeconds`).
    Shutdown {
        /// The grace period in seconds.
        grace_period_seconds: Option<u64>,
    },
    /// Press the power button and start the guest again once it powered off.
    SoftReboot,
    /// Restart the guest at once, like a reset button.
    Reset,
    /// End the VM at once.
    Stop,
    /// Save the VM's memory state (vCPUs, devices, RAM) as snapshot `name` in the launcher's
    /// snapshot directory; a running guest is paused for the cut and resumed after it. The
    /// reply is a [`crate::SnapshotReply`]. `kubevirt-launcher run --restore-from` resumes it.
    Snapshot {
        /// The snapshot's name: 1-63 characters of `a-z`, `0-9` and `-`, starting and ending
        /// alphanumeric (a DNS label, as VirtualMachineSnapshot names go).
        name: String,
    },
    /// Live-migrate the VM to the launcher listening at the request's target (see
    /// [`crate::MigrateRequest`]); the reply is [`crate::Done`] once it started, its progress
    /// shows in [`crate::Status::migration`].
    Migrate(Box<crate::MigrateRequest>),
    /// Cancel the outgoing migration under way (upstream's `CancelVirtualMachineMigration`):
    /// it fails at its next frame and the guest runs on here; too late once the target
    /// acknowledged. The reply is [`crate::Done`]; asking again while it winds down is fine,
    /// and a launcher with no migration under way says so.
    CancelMigration,
    /// The launcher's resource use and device counters ([`crate::Stats`]), for metrics.
    Stats,
    /// Run this VMI: only a launcher waiting in its pod ([`crate::Phase::Waiting`]) takes it;
    /// the reply is [`crate::Done`] once the VM is being set up (its progress shows in
    /// [`Request::Status`]).
    Start(Box<StartRequest>),
}

/// The ops, as the wire names them.
const OPS: &[&str] = &[
    "status",
    "pause",
    "unpause",
    "shutdown",
    "softReboot",
    "reset",
    "stop",
    "start",
    "snapshot",
    "migrate",
    "cancelMigration",
    "stats",
];

/// Why a request line was refused.
#[derive(Debug, Error)]
pub enum RequestError {
    /// The line is not a JSON object.
    #[error("a request is one JSON object per line: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The line is JSON but not an object.
    #[error("a request is a JSON object like {{\"op\": \"status\"}}")]
    NotObject,
    /// No `op`.
    #[error("the request has no \"op\"; use one of {}", OPS.join(", "))]
    NoOp,
    /// An `op` this protocol does not have.
    #[error("unknown op {0:?}: use one of {ops}", ops = OPS.join(", "))]
    UnknownOp(String),
    /// The request speaks another protocol version.
    #[error(
        "the request speaks protocol version {theirs}, this launcher speaks {ours}: use a node agent built with this launcher"
    )]
    Version {
        /// The request's version.
        theirs: Value,
        /// Ours.
        ours: u32,
    },
    /// A field of the request has the wrong type or value.
    #[error("{op}: {field} {expected}")]
    Field {
        /// The op.
        op: &'static str,
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
    },
}

impl Request {
    /// The op as the wire names it.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Pause => "pause",
            Request::Unpause => "unpause",
            Request::Shutdown { .. } => "shutdown",
            Request::SoftReboot => "softReboot",
            Request::Reset => "reset",
            Request::Stop => "stop",
            Request::Start(_) => "start",
            Request::Snapshot { .. } => "snapshot",
            Request::Migrate(_) => "migrate",
            Request::CancelMigration => "cancelMigration",
            Request::Stats => "stats",
        }
    }

    /// The request as one line (no newline), with this protocol's version.
    pub fn to_line(&self) -> String {
        let mut m = Map::new();
        m.insert("version".into(), VERSION.into());
        m.insert("op".into(), self.op().into());
        match self {
            Request::Shutdown {
                grace_period_seconds: Some(s),
            } => {
                m.insert("gracePeriodSeconds".into(), (*s).into());
            }
            Request::Snapshot { name } => {
                m.insert("name".into(), name.clone().into());
            }
            Request::Migrate(migrate) => migrate.to_fields(&mut m),
            Request::Start(start) => {
                m.insert("vmi".into(), start.vmi.clone());
                if let Some(name) = &start.restore_from {
                    m.insert("restoreFrom".into(), name.clone().into());
                }
                m.insert("networkPrepared".into(), start.network_prepared.into());
            }
            _ => {}
        }
        Value::Object(m).to_string()
    }

    /// Decodes a request line. A line without `"version"` is taken as this version (a request
    /// typed by hand); one with another version is refused.
    ///
    /// # Errors
    /// [`RequestError`] saying what is wrong with the line.
    pub fn decode(line: &str) -> Result<Request, RequestError> {
        let value: Value = serde_json::from_str(line).map_err(RequestError::NotJson)?;
        let Value::Object(m) = value else {
            return Err(RequestError::NotObject);
        };
        match m.get("version") {
            None => {}
            Some(v) if v.as_u64() == Some(u64::from(VERSION)) => {}
            Some(v) => {
                return Err(RequestError::Version {
                    theirs: v.clone(),
                    ours: VERSION,
                });
            }
        }
        let op = match m.get("op") {
            None | Some(Value::Null) => return Err(RequestError::NoOp),
            Some(Value::String(s)) => s.as_str(),
            Some(other) => return Err(RequestError::UnknownOp(other.to_string())),
        };
        Ok(match op {
            "status" => Request::Status,
            "pause" => Request::Pause,
            "unpause" => Request::Unpause,
            "shutdown" => Request::Shutdown {
                grace_period_seconds: match m.get("gracePeriodSeconds") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(v.as_u64().ok_or(RequestError::Field {
                        op: "shutdown",
                        field: "gracePeriodSeconds",
                        expected: "must be a whole number of seconds ≥ 0",
                    })?),
                },
            },
            "softReboot" => Request::SoftReboot,
            "reset" => Request::Reset,
            "stop" => Request::Stop,
            "migrate" => Request::Migrate(Box::new(crate::MigrateRequest::from_fields(&m)?)),
            "cancelMigration" => Request::CancelMigration,
            "stats" => Request::Stats,
            "snapshot" => Request::Snapshot {
                name: match m.get("name") {
                    Some(Value::String(n)) if is_snapshot_name(n) => n.clone(),
                    _ => {
                        return Err(RequestError::Field {
                            op: "snapshot",
                            field: "name",
                            expected: "must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
                        });
                    }
                },
            },
            "start" => Request::Start(Box::new(StartRequest {
                vmi: match m.get("vmi") {
                    Some(v @ Value::Object(_)) => v.clone(),
                    _ => {
                        return Err(RequestError::Field {
                            op: "start",
                            field: "vmi",
                            expected: "must be the VirtualMachineInstance object",
                        });
                    }
                },
                network_prepared: match m.get("networkPrepared") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(RequestError::Field {
                            op: "start",
                            field: "networkPrepared",
                            expected: "must be true or false",
                        });
                    }
                },
                restore_from: match m.get("restoreFrom") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(n)) if is_snapshot_name(n) => Some(n.clone()),
                    Some(_) => {
                        return Err(RequestError::Field {
                            op: "start",
                            field: "restoreFrom",
                            expected: "must name a snapshot directory: 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
                        });
                    }
                },
            })),
            other => return Err(RequestError::UnknownOp(other.to_string())),
        })
    }
}

/// Whether `name` can name a snapshot directory: a DNS label (no `/`, no `..`).
pub fn is_snapshot_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&name.len())
        && name.chars().all(|c| alnum(c) || c == '-')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_round_trips() {
        for r in [
            Request::Status,
            Request::Pause,
            Request::Unpause,
            Request::Shutdown {
                grace_period_seconds: None,
            },
            Request::Shutdown {
                grace_period_seconds: Some(0),
            },
            Request::Shutdown {
                grace_period_seconds: Some(30),
            },
            Request::SoftReboot,
            Request::Reset,
            Request::Stop,
            Request::Stats,
            Request::CancelMigration,
            Request::Snapshot {
                name: "before-upgrade-1".into(),
            },
            Request::Start(Box::new(StartRequest {
                vmi: serde_json::json!({"kind": "VirtualMachineInstance", "metadata": {"uid": "u"}}),
                network_prepared: true,
                restore_from: None,
            })),
            Request::Start(Box::new(StartRequest {
                vmi: serde_json::json!({"kind": "VirtualMachineInstance", "metadata": {"uid": "u"}}),
                network_prepared: false,
                restore_from: Some("vmsnapshot-content-1".into()),
            })),
        ] {
            let line = r.to_line();
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(Request::decode(&line).unwrap(), r, "{line}");
        }
    }

    #[test]
    fn a_hand_typed_request_without_version_is_accepted() {
        assert_eq!(
            Request::decode(r#"{"op":"shutdown","gracePeriodSeconds":3}"#).unwrap(),
            Request::Shutdown {
                grace_period_seconds: Some(3)
            }
        );
    }

    #[test]
    fn another_version_is_a_clear_error() {
        let e = Request::decode(r#"{"op":"status","version":1}"#).unwrap_err();
        assert!(matches!(e, RequestError::Version { ours: VERSION, .. }));
        let text = e.to_string();
        assert!(
            text.contains("version 1") && text.contains("speaks 2"),
            "{text}"
        );
    }

    #[test]
    fn unknown_ops_and_bad_fields_say_what_to_do() {
        let e = Request::decode(r#"{"op":"reboot-please"}"#).unwrap_err();
        assert!(matches!(&e, RequestError::UnknownOp(op) if op == "reboot-please"));
        assert!(e.to_string().contains("softReboot"), "{e}");
        assert!(matches!(Request::decode("{}"), Err(RequestError::NoOp)));
        assert!(matches!(
            Request::decode("[1]"),
            Err(RequestError::NotObject)
        ));
        assert!(matches!(
            Request::decode("status"),
            Err(RequestError::NotJson(_))
        ));
        let e = Request::decode(r#"{"op":"shutdown","gracePeriodSeconds":-1}"#).unwrap_err();
        assert!(e.to_string().contains("gracePeriodSeconds"), "{e}");
        let e = Request::decode(r#"{"op":"start","vmi":"demo"}"#).unwrap_err();
        assert!(e.to_string().contains("start: vmi"), "{e}");
        let e = Request::decode(r#"{"op":"start","vmi":{},"networkPrepared":1}"#).unwrap_err();
        assert!(e.to_string().contains("networkPrepared"), "{e}");
        for bad in [
            "",
            "../etc",
            "a/b",
            "Upper",
            "-lead",
            "trail-",
            &"x".repeat(64),
        ] {
            let line = serde_json::json!({"op": "snapshot", "name": bad}).to_string();
            let e = Request::decode(&line).unwrap_err();
            assert!(e.to_string().starts_with("snapshot: name"), "{bad:?}: {e}");
        }
        assert!(Request::decode(r#"{"op":"snapshot"}"#).is_err());
        let line = serde_json::json!({"op": "start", "vmi": {}, "restoreFrom": "../x"}).to_string();
        let e = Request::decode(&line).unwrap_err();
        assert!(e.to_string().starts_with("start: restoreFrom"), "{e}");
    }

    proptest::proptest! {
        /// A name that passes is always one path component that stays inside its directory.
        #[test]
        fn snapshot_names_never_leave_their_directory(name in "[a-z0-9./-]{0,70}") {
            if is_snapshot_name(&name) {
                proptest::prop_assert!(!name.contains('/') && !name.contains('.'));
                proptest::prop_assert!(!name.is_empty() && name.len() <= 63);
            }
        }
    }
}
