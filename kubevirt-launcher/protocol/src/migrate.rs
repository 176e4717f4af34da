//! Live migration: the `migrate` request a source launcher takes, and the progress its
//! `status` reports while (and after) it runs.
//!
//! ```text
//! {"op": "migrate", "target": "unix:/run/target/migration.sock" | "tcp:10.0.0.7:49152",
//!  "bandwidthMiBps": 64, "completionTimeoutPerGiB": 150, "allowPostCopy": false}
//! ```
//! The target is a launcher started with `run --incoming ADDR` (or `serve --incoming ADDR`,
//! which then takes its `start` as usual), listening at that address. The reply comes as soon as the migration
//! started; [`crate::Status::migration`] shows its progress; on success the source launcher
//! leaves [`crate::ExitStatus::Migrated`] in its final status and exits (`run`: code 4;
//! `serve`: code 0, [`crate::ExitStatus::pod_code`], so its pod ends Completed).
//!
//! Disks: a persistent disk (claim, hostDisk) is one image both launchers open; the target
//! opens it without its write lock and takes the lock when the source hands it over, before
//! it acknowledges the final state (a disk another VM holds fails the migration with the disk
//! named, and the source runs on). A disk that lives with the VMI (containerDisk overlay,
//! emptyDisk) is the target's own fresh one, and what the guest wrote to it is copied in the
//! stream ([`MigrationStatus::disk_bytes`]). Both launchers must run the same VMI spec: the
//! target refuses a source whose disk list (sizes, which are copied) differs from its own.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::RequestError;

/// KubeVirt's default `completionTimeoutPerGiB` (seconds per GiB to move: guest RAM plus
/// what the guest wrote to the copied disks).
pub const DEFAULT_COMPLETION_TIMEOUT_PER_GIB: u64 = 150;

/// What `{"op": "migrate"}` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateRequest {
    /// Where the target launcher listens: `unix:PATH` or `tcp:HOST:PORT`.
    pub target: String,
    /// Stream bandwidth limit in MiB/s (`None` or 0: unlimited, as upstream's default).
    #[serde(
        default,
        rename = "bandwidthMiBps",
        skip_serializing_if = "Option::is_none"
    )]
    pub bandwidth_mib_per_sec: Option<u64>,
    /// Seconds per GiB of guest RAM the migration may take before it is aborted (upstream's
    /// `completionTimeoutPerGiB`; `None`: its default, 150).
    #[serde(
        default,
        rename = "completionTimeoutPerGiB",
        skip_serializing_if = "Option::is_none"
    )]
    pub completion_timeout_per_gib: Option<u64>,
    /// Post-copy: not supported, so `true` is refused.
    #[serde(default)]
    pub allow_post_copy: bool,
}

impl MigrateRequest {
    /// A request for `target` with upstream's defaults.
    pub fn new(target: impl Into<String>) -> Self {
        MigrateRequest {
            target: target.into(),
            bandwidth_mib_per_sec: None,
            completion_timeout_per_gib: None,
            allow_post_copy: false,
        }
    }

    /// Reads the request's fields from a request object.
    ///
    /// # Errors
    /// [`RequestError::Field`] naming the field that is missing or wrong.
    pub fn from_fields(m: &Map<String, Value>) -> Result<Self, RequestError> {
        let field = |field: &'static str, expected: &'static str| RequestError::Field {
            op: "migrate",
            field,
            expected,
        };
        let target = m.get("target").and_then(Value::as_str).ok_or(field(
            "target",
            "must be \"unix:PATH\" or \"tcp:HOST:PORT\"",
        ))?;
        if !(target.starts_with("unix:") || target.starts_with("tcp:")) {
            return Err(field(
                "target",
                "must be \"unix:PATH\" or \"tcp:HOST:PORT\"",
            ));
        }
        let number = |name: &'static str| match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or(field(name, "must be a whole number ≥ 0")),
        };
        let allow_post_copy = match m.get("allowPostCopy") {
            None | Some(Value::Null) => false,
            Some(v) => v
                .as_bool()
                .ok_or(field("allowPostCopy", "must be true or false"))?,
        };
        if allow_post_copy {
            return Err(field(
                "allowPostCopy",
                "is not supported: this launcher migrates with pre-copy only (leave it false)",
            ));
        }
        Ok(MigrateRequest {
            target: target.to_string(),
            bandwidth_mib_per_sec: number("bandwidthMiBps")?,
            completion_timeout_per_gib: number("completionTimeoutPerGiB")?,
            allow_post_copy,
        })
    }

    /// Writes the request's fields into a request object.
    pub fn to_fields(&self, m: &mut Map<String, Value>) {
        if let Ok(Value::Object(fields)) = serde_json::to_value(self) {
            m.extend(fields);
        }
    }
}

/// A migration's progress, in [`crate::Status::migration`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MigrationStatus {
    /// `Setup`, `PreCopy`, `StopAndCopy`, `Completed` or `Failed`.
    pub phase: String,
    /// The target address.
    pub target: String,
    /// Copy rounds done.
    pub rounds: u32,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Guest RAM in bytes.
    pub memory_total: u64,
    /// Bytes of disk contents copied (the disks that live with the VMI: containerDisk
    /// overlays, emptyDisks; claims are shared, not copied).
    pub disk_bytes: u64,
    /// Pages dirtied per second in the last round.
    pub dirty_rate_pages_per_sec: u64,
    /// Measured bandwidth, bytes per second.
    pub bandwidth_bytes_per_sec: u64,
    /// How long the guest was paused, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// Milliseconds since the migration started.
    pub elapsed_ms: u64,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MigrationStatus {
    /// Whether the migration ended (completed or failed).
    pub fn is_done(&self) -> bool {
        self.phase == "Completed" || self.phase == "Failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;

    #[test]
    fn a_migrate_request_round_trips_and_post_copy_is_refused() {
        let req = Request::Migrate(Box::new(MigrateRequest {
            bandwidth_mib_per_sec: Some(64),
            completion_timeout_per_gib: Some(10),
            ..MigrateRequest::new("tcp:10.0.0.7:4444")
        }));
        let line = req.to_line();
        assert!(line.contains("\"bandwidthMiBps\":64"), "{line}");
        assert_eq!(Request::decode(&line).unwrap(), req);
        let err = Request::decode(r#"{"op":"migrate","target":"unix:/x","allowPostCopy":true}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowPostCopy is not supported"), "{err}");
        let err = Request::decode(r#"{"op":"migrate","target":"/x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unix:PATH"), "{err}");
    }
}
