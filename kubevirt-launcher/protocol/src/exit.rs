//! How a launcher ends: its exit code, and the final status it leaves in its run directory.

use crate::{FINAL_STATUS, Phase, VERSION};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The launcher's exit status, one exit code each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// 0: the guest powered off, or was stopped on request.
    Succeeded,
    /// 1: the guest or the VMM failed.
    Failed,
    /// 2: the document is invalid, or uses what the launcher does not support: running it
    /// again will not help.
    Invalid,
    /// 3: the launch failed (image, disk, network or VMM set-up).
    LaunchFailed,
    /// 4: the guest was live-migrated to another launcher and runs there: this launcher's
    /// part ended as it should, the VMI goes on.
    Migrated,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Succeeded => 0,
            ExitStatus::Failed => 1,
            ExitStatus::Invalid => 2,
            ExitStatus::LaunchFailed => 3,
            ExitStatus::Migrated => 4,
        }
    }

    /// The exit code of a `serve` launcher (a virt-launcher pod's `compute` container): as
    /// [`ExitStatus::code`], except that a launcher whose guest was migrated away exits 0, so
    /// its pod ends Completed (phase Succeeded) as upstream's source virt-launcher pod does,
    /// not Failed. Its final status still says [`ExitStatus::Migrated`]: read that to tell
    /// a migration from a power-off.
    pub fn pod_code(self) -> u8 {
        match self {
            ExitStatus::Migrated => 0,
            other => other.code(),
        }
    }

    /// The status an exit code stands for (`None`: not a launcher's code).
    pub fn from_code(code: i32) -> Option<ExitStatus> {
        Some(match code {
            0 => ExitStatus::Succeeded,
            1 => ExitStatus::Failed,
            2 => ExitStatus::Invalid,
            3 => ExitStatus::LaunchFailed,
            4 => ExitStatus::Migrated,
            _ => return None,
        })
    }

    /// The phase this launcher's run ends in. A migrated launcher's run succeeded; the VMI
    /// itself runs on, on the target: a node agent must not take this phase for the VMI's.
    pub fn phase(self) -> Phase {
        match self {
            ExitStatus::Succeeded | ExitStatus::Migrated => Phase::Succeeded,
            _ => Phase::Failed,
        }
    }

    /// What it means, for a reason a user reads.
    pub fn describe(self) -> &'static str {
        match self {
            ExitStatus::Succeeded => "the guest powered off",
            ExitStatus::Failed => "the guest or the VMM failed",
            ExitStatus::Invalid => "the launcher refused the VMI (invalid or not supported)",
            ExitStatus::LaunchFailed => "the launch failed (image, disk, network or VMM set-up)",
            ExitStatus::Migrated => "the guest was migrated to another launcher and runs there",
        }
    }
}

/// What a launcher leaves in [`FINAL_STATUS`] before it exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalStatus {
    /// The protocol version.
    pub version: u32,
    /// How it ended (its exit code).
    pub exit: ExitStatus,
    /// Why, in words; for [`ExitStatus::Invalid`] every problem as `field.path: message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a final status could not be written or read.
#[derive(Debug, Error)]
pub enum FinalStatusError {
    /// The file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a final status of this protocol.
    #[error("{path}: not a launcher final status: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// It was written by another protocol version.
    #[error("{path}: written by protocol version {theirs}, this side speaks {ours}")]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
}

impl FinalStatus {
    /// A final status of this version.
    pub fn new(exit: ExitStatus, reason: Option<String>) -> FinalStatus {
        FinalStatus {
            version: VERSION,
            exit,
            reason,
        }
    }

    /// Writes it to `run_dir`'s [`FINAL_STATUS`] (atomically: readers see all of it or none).
    ///
    /// # Errors
    /// [`FinalStatusError::Io`] if the run directory cannot be written.
    pub fn write(&self, run_dir: &Path) -> Result<(), FinalStatusError> {
        let path = run_dir.join(FINAL_STATUS);
        let partial = run_dir.join(format!(".{FINAL_STATUS}.partial"));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FinalStatusError::Io { path, source }
        };
        let text = serde_json::to_vec(self).map_err(|source| FinalStatusError::Invalid {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&partial, text).map_err(io(&partial))?;
        std::fs::rename(&partial, &path).map_err(io(&path))
    }

    /// Reads `run_dir`'s [`FINAL_STATUS`]; `Ok(None)` if the launcher left none (it was killed,
    /// or had no run directory).
    ///
    /// # Errors
    /// [`FinalStatusError`] if the file exists but cannot be read or is not of this version.
    pub fn read(run_dir: &Path) -> Result<Option<FinalStatus>, FinalStatusError> {
        let path = run_dir.join(FINAL_STATUS);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(FinalStatusError::Io { path, source }),
        };
        let status: FinalStatus =
            serde_json::from_slice(&text).map_err(|source| FinalStatusError::Invalid {
                path: path.clone(),
                source,
            })?;
        if status.version != VERSION {
            return Err(FinalStatusError::Version {
                path,
                theirs: status.version,
                ours: VERSION,
            });
        }
        Ok(Some(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_round_trip() {
        for s in [
            ExitStatus::Succeeded,
            ExitStatus::Failed,
            ExitStatus::Invalid,
            ExitStatus::LaunchFailed,
        ] {
            assert_eq!(ExitStatus::from_code(i32::from(s.code())), Some(s));
        }
        assert_eq!(ExitStatus::from_code(101), None);
        assert_eq!(ExitStatus::Invalid.phase(), Phase::Failed);
    }

    #[test]
    fn final_status_written_and_read_back() {
        let dir = std::env::temp_dir().join(format!("kv-proto-final-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(FinalStatus::read(&dir).unwrap().is_none());
        let s = FinalStatus::new(
            ExitStatus::Invalid,
            Some("spec.domain.devices.disks[0].bootOrder: bootOrder must be 1 or more".into()),
        );
        s.write(&dir).unwrap();
        assert_eq!(FinalStatus::read(&dir).unwrap(), Some(s));
        std::fs::write(dir.join(FINAL_STATUS), r#"{"version":9,"exit":"Failed"}"#).unwrap();
        assert!(matches!(
            FinalStatus::read(&dir),
            Err(FinalStatusError::Version { theirs: 9, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
