//! The events the node agent records on a VMI (upstream virt-handler's reasons and messages,
//! from `virt-handler` with the node as `source.host`).

use crate::events::Note;

/// `source.component` of the node agent's events.
pub const COMPONENT: &str = "virt-handler";

/// What the VMI's phase moving from `old` to `new` tells (virt-handler's
/// `recordPhaseChangeEvent`): nothing unless it changed.
pub fn phase_change(old: &str, new: &str) -> Option<Note> {
    if old == new {
        return None;
    }
    match new {
        "Running" => Some(Note::normal("Started", "VirtualMachineInstance started.")),
        "Succeeded" => Some(Note::normal(
            "Stopped",
            "The VirtualMachineInstance was shut down.",
        )),
        "Failed" => Some(Note::warning(
            "Stopped",
            "The VirtualMachineInstance crashed.",
        )),
        _ => None,
    }
}

/// The source's agent started moving the guest (virt-handler's `Migrating`).
pub fn migrating() -> Note {
    Note::normal("Migrating", "VirtualMachineInstance is migrating.")
}

/// The source's agent asked its launcher to cancel the migration (upstream virt-handler's
/// `VMIAbortingMigration`).
pub fn aborting_migration() -> Note {
    Note::normal("Migrating", "VirtualMachineInstance is aborting migration.")
}

/// The target's agent found the guest running on `node` (virt-handler's `Migrated`).
pub fn migrated(node: &str) -> Note {
    Note::normal(
        "Migrated",
        format!("The VirtualMachineInstance migrated to node {node}."),
    )
}

/// The migration `uid` failed for `why`; the guest runs on where it was.
pub fn migration_failed(uid: &str, why: &str) -> Note {
    Note::warning(
        "Migrated",
        format!("VirtualMachineInstance migration uid {uid} failed. reason:{why}"),
    )
}

/// The agent asks a deleted VMI's guest to shut down.
pub fn shutting_down() -> Note {
    Note::normal("ShuttingDown", "Signaled Graceful Shutdown")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn a_phase_change_is_told_once() {
        let started = phase_change("Scheduled", "Running").expect("an event");
        assert_eq!(
            (started.type_, started.reason),
            (EventType::Normal, "Started")
        );
        assert_eq!(phase_change("Running", "Running"), None);
        assert_eq!(phase_change("Pending", "Scheduled"), None);
        let down = phase_change("Running", "Succeeded").expect("an event");
        assert_eq!((down.type_, down.reason), (EventType::Normal, "Stopped"));
        let moved = migrated("n2");
        assert_eq!((moved.type_, moved.reason), (EventType::Normal, "Migrated"));
        assert_eq!(
            moved.message,
            "The VirtualMachineInstance migrated to node n2."
        );
        let crashed = phase_change("Running", "Failed").expect("an event");
        assert_eq!(
            (crashed.type_, crashed.reason),
            (EventType::Warning, "Stopped")
        );
    }
}
