//! Replies: `{"version": N, "ok": true, ...body}` or `{"version": N, "ok": false, "error": "..."}`.

use crate::VERSION;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use thiserror::Error;

/// The VMI phase a launcher reports, as upstream names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Phase {
    /// The launcher runs in its virt-launcher pod and waits for the node agent's
    /// [`crate::Request::Start`]; nothing is set up yet.
    Waiting,
    /// The VM is set up; the guest has not run yet.
    #[default]
    Scheduled,
    /// The guest runs (or is paused, or restarts after a guest reboot).
    Running,
    /// The guest powered off, or was stopped on request.
    Succeeded,
    /// The guest or the VMM failed.
    Failed,
}

impl Phase {
    /// The name upstream gives the phase (`status.phase`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Waiting => "Waiting",
            Phase::Scheduled => "Scheduled",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    /// Succeeded or Failed: the VM will not run again.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A guest network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestInterface {
    /// The VMI's interface name.
    pub name: String,
    /// Its MAC address (`02:00:00:00:00:01`).
    pub mac: String,
    /// The address the guest was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ip: Option<String>,
    /// The binding (`masquerade`).
    #[serde(default)]
    pub binding: String,
}

/// What the guest was given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GuestInfo {
    /// vCPUs.
    pub vcpus: u32,
    /// Guest memory in bytes.
    pub memory_bytes: u64,
    /// Disk names in attach order.
    pub disks: Vec<String>,
    /// Network interfaces.
    pub interfaces: Vec<GuestInterface>,
}

/// Which VMI a launcher runs, and which process it is: what a node agent that restarted checks
/// before it adopts a launcher it finds running.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LauncherIdentity {
    /// The VMI's namespace.
    pub namespace: String,
    /// The VMI's name.
    pub name: String,
    /// The VMI's uid (empty if the document had none).
    #[serde(default)]
    pub uid: String,
    /// The launcher's process id.
    pub pid: u32,
}

/// The reply to [`crate::Request::Status`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The phase.
    pub phase: Phase,
    /// Why, for Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The vCPUs are paused.
    #[serde(default)]
    pub paused: bool,
    /// Why a disk paused them (its error policy stops on the backend's error; unpause runs
    /// the failed request again). Additive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_error: Option<String>,
    /// How often the guest was restarted (guest reboots, resets).
    #[serde(default)]
    pub restarts: u32,
    /// What the guest was given.
    #[serde(default)]
    pub guest: GuestInfo,
    /// Which VMI this launcher runs (additive: launchers before it leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher: Option<LauncherIdentity>,
    /// The last live migration asked of this launcher, while it runs and after it ended
    /// (additive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<crate::MigrationStatus>,
    /// The guest was handed to a migration's target and runs there: this launcher's VM ended
    /// (`phase` Succeeded) and the launcher is finishing; it exits with
    /// [`crate::ExitStatus::Migrated`]. Its phase says nothing about the VMI any more
    /// (additive).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub migrated_away: bool,
}

/// The reply to [`crate::Request::Shutdown`] (`"shutdown": "requested" | ...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "shutdown", rename_all = "camelCase")]
pub enum ShutdownReply {
    /// The power button is pressed; the VM is stopped if it runs after the grace period.
    #[serde(rename_all = "camelCase")]
    Requested {
        /// The grace period in force.
        grace_period_seconds: u64,
    },
    /// A shutdown was already under way; nothing more was done.
    AlreadyRequested,
    /// The VM has no power button (no ACPI): it was stopped at once.
    Stopped {
        /// How the VM ended.
        exit: String,
    },
}

/// The reply to [`crate::Request::Stop`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReply {
    /// How the VM ended.
    pub exit: String,
}

/// The reply to [`crate::Request::Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotReply {
    /// Where the snapshot is, as the launcher sees it.
    pub directory: String,
    /// Bytes of the state file.
    pub state_bytes: u64,
    /// Guest RAM bytes written (zero pages are holes in the memory file).
    pub memory_bytes_written: u64,
    /// The memory file's size: all of guest RAM.
    pub memory_size: u64,
}

/// The reply to requests that only succeed or fail (pause, unpause, softReboot, reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Done {}

/// Why a reply line could not be used.
#[derive(Debug, Error)]
pub enum ReplyError {
    /// The launcher refused the request.
    #[error("the launcher refused: {0}")]
    Refused(String),
    /// The launcher speaks another protocol version.
    #[error(
        "the launcher speaks protocol version {theirs}, this side speaks {ours}: run a launcher and node agent of the same build"
    )]
    Version {
        /// The launcher's version (`null`: it names none).
        theirs: Value,
        /// Ours.
        ours: u32,
    },
    /// The line is not a reply of this protocol.
    #[error("the launcher's reply is not valid: {0}")]
    Invalid(#[source] serde_json::Error),
}

/// A successful reply carrying `body`, as one line (no newline).
pub fn encode_ok<T: Serialize>(body: &T) -> String {
    let mut m = match serde_json::to_value(body) {
        Ok(Value::Object(m)) => m,
        // Bodies are structs; anything else carries nothing.
        _ => Map::new(),
    };
    m.insert("version".into(), VERSION.into());
    m.insert("ok".into(), true.into());
    Value::Object(m).to_string()
}

/// A refusal, as one line (no newline). `error` is shown to whoever asked.
pub fn encode_error(error: &dyn fmt::Display) -> String {
    serde_json::json!({"version": VERSION, "ok": false, "error": error.to_string()}).to_string()
}

/// Decodes a reply line into the reply type of the request that was sent.
///
/// # Errors
/// [`ReplyError::Version`] if the launcher speaks another version, [`ReplyError::Refused`] with
/// its error if it refused, [`ReplyError::Invalid`] if the line is no reply of type `T`.
pub fn decode_reply<T: DeserializeOwned>(line: &str) -> Result<T, ReplyError> {
    let value: Value = serde_json::from_str(line).map_err(ReplyError::Invalid)?;
    let version = value.get("version").cloned().unwrap_or(Value::Null);
    if version.as_u64() != Some(u64::from(VERSION)) {
        return Err(ReplyError::Version {
            theirs: version,
            ours: VERSION,
        });
    }
    if value.get("ok") != Some(&Value::Bool(true)) {
        let error = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(ReplyError::Refused(error.to_string()));
    }
    serde_json::from_value(value).map_err(ReplyError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            phase: Phase::Running,
            reason: None,
            paused: true,
            io_error: Some("disk root: No space left on device (os error 28)".into()),
            restarts: 2,
            guest: GuestInfo {
                vcpus: 2,
                memory_bytes: 64 << 20,
                disks: vec!["root".into()],
                interfaces: vec![GuestInterface {
                    name: "default".into(),
                    mac: "02:00:00:00:00:01".into(),
                    guest_ip: Some("10.0.2.2".into()),
                    binding: "masquerade".into(),
                }],
            },
            launcher: Some(LauncherIdentity {
                namespace: "default".into(),
                name: "demo".into(),
                uid: "1234".into(),
                pid: 42,
            }),
            migration: None,
            migrated_away: false,
        }
    }

    #[test]
    fn replies_round_trip_with_their_body_at_the_top() {
        let line = encode_ok(&status());
        let raw: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (&raw["ok"], &raw["phase"], &raw["version"]),
            (
                &Value::Bool(true),
                &Value::from("Running"),
                &Value::from(VERSION)
            )
        );
        assert_eq!(decode_reply::<Status>(&line).unwrap(), status());
        assert!(raw.get("migratedAway").is_none(), "{raw}");
        let away = Status {
            phase: Phase::Succeeded,
            migrated_away: true,
            ..status()
        };
        let line = encode_ok(&away);
        let raw: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(raw["migratedAway"], true);
        assert_eq!(decode_reply::<Status>(&line).unwrap(), away);
        for r in [
            ShutdownReply::Requested {
                grace_period_seconds: 5,
            },
            ShutdownReply::AlreadyRequested,
            ShutdownReply::Stopped {
                exit: "stopped".into(),
            },
        ] {
            assert_eq!(decode_reply::<ShutdownReply>(&encode_ok(&r)).unwrap(), r);
        }
        let raw: Value = serde_json::from_str(&encode_ok(&ShutdownReply::Requested {
            grace_period_seconds: 5,
        }))
        .unwrap();
        assert_eq!(raw["gracePeriodSeconds"], 5);
        decode_reply::<Done>(&encode_ok(&Done {})).unwrap();
    }

    #[test]
    fn a_status_without_the_launcher_identity_still_decodes() {
        let s: Status = decode_reply(r#"{"version":2,"ok":true,"phase":"Running"}"#).unwrap();
        assert_eq!(s.launcher, None);
        let raw: Value = serde_json::from_str(&encode_ok(&status())).unwrap();
        assert_eq!(raw["launcher"]["uid"], "1234");
        assert_eq!(raw["launcher"]["pid"], 42);
    }

    #[test]
    fn refusals_and_other_versions_are_errors() {
        let e = decode_reply::<Done>(&encode_error(&"the VM is not running")).unwrap_err();
        assert!(matches!(&e, ReplyError::Refused(m) if m == "the VM is not running"));
        let e = decode_reply::<Status>(r#"{"ok":true,"phase":"Running"}"#).unwrap_err();
        assert!(matches!(e, ReplyError::Version { .. }), "{e}");
        assert!(e.to_string().contains("version null"), "{e}");
        let e = decode_reply::<Status>(r#"{"version":7,"ok":true,"phase":"Running"}"#).unwrap_err();
        assert!(e.to_string().contains("version 7"), "{e}");
    }

    #[test]
    fn an_unknown_phase_is_invalid_not_a_guess() {
        let e =
            decode_reply::<Status>(r#"{"version":2,"ok":true,"phase":"Levitating"}"#).unwrap_err();
        assert!(matches!(e, ReplyError::Invalid(_)), "{e}");
    }
}
