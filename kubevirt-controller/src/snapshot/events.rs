//! The events the snapshot and restore controllers record (upstream's reasons and messages,
//! from `snapshot-controller` and `restore-controller`).

use crate::events::Note;

/// `source.component` of the snapshot controller's events.
pub const SNAPSHOT_COMPONENT: &str = "snapshot-controller";
/// `source.component` of the restore controller's events.
pub const RESTORE_COMPONENT: &str = "restore-controller";

/// A snapshot's content was created (on the VirtualMachineSnapshot).
pub fn content_created(content: &str) -> Note {
    Note::normal(
        "SuccessfulVirtualMachineSnapshotContentCreate",
        format!("Successfully created VirtualMachineSnapshotContent {content}"),
    )
}

/// A VolumeSnapshot of a content was created (on the VirtualMachineSnapshotContent).
pub fn volume_snapshot_created(volume_snapshot: &str) -> Note {
    Note::normal(
        "SuccessfulVolumeSnapshotCreate",
        format!("Successfully created VolumeSnapshot {volume_snapshot}"),
    )
}

/// A restore completed (on the VirtualMachineRestore).
pub fn restore_complete(restore: &str) -> Note {
    Note::normal(
        "VirtualMachineRestoreComplete",
        format!("Successfully completed VirtualMachineRestore {restore}"),
    )
}

/// A restore cannot go on until something changes (on the VirtualMachineRestore).
pub fn restore_error(message: &str) -> Note {
    Note::warning(
        "VirtualMachineRestoreError",
        format!("VirtualMachineRestore encountered error {message}"),
    )
}

/// A restore failed for good (on the VirtualMachineRestore).
pub fn restore_failed(message: &str) -> Note {
    Note::warning(
        "Operation failed",
        format!("VirtualMachineRestore failed {message}"),
    )
}

/// The restore's target still has an instance (on the VirtualMachineRestore).
pub fn restore_target_not_ready(message: &str) -> Note {
    Note::warning(super::readiness::NOT_READY_EVENT, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn upstream_reasons() {
        assert_eq!(
            content_created("vmsnapshot-content-x").reason,
            "SuccessfulVirtualMachineSnapshotContentCreate"
        );
        assert_eq!(
            volume_snapshot_created("vs").message,
            "Successfully created VolumeSnapshot vs"
        );
        assert_eq!(restore_complete("r").type_, EventType::Normal);
        let error = restore_error("no");
        assert_eq!(
            (error.type_, error.reason),
            (EventType::Warning, "VirtualMachineRestoreError")
        );
    }
}
