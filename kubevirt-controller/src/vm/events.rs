//! The events the VM controller records on a VM (upstream virt-controller's reasons and
//! messages, from `virtualmachine-controller`).

use crate::events::Note;

/// `source.component` of the VM controller's events.
pub const COMPONENT: &str = "virtualmachine-controller";

/// The VM's instance was created.
pub fn created(vmi: &str) -> Note {
    Note::normal(
        "SuccessfulCreate",
        format!("Started the virtual machine by creating the new virtual machine instance {vmi}"),
    )
}

/// Creating the VM's instance failed.
pub fn failed_create(error: &str) -> Note {
    Note::warning(
        "FailedCreate",
        format!("Error creating virtual machine instance: {error}"),
    )
}

/// The VM's instance (this UID) was deleted.
pub fn deleted(vmi_uid: &str) -> Note {
    Note::normal(
        "SuccessfulDelete",
        format!("Stopped the virtual machine by deleting the virtual machine instance {vmi_uid}"),
    )
}

/// Deleting the VM's instance failed.
pub fn failed_delete(vmi: &str, error: &str) -> Note {
    Note::warning(
        "FailedDelete",
        format!("Error deleting virtual machine instance {vmi}: {error}"),
    )
}

/// A DataVolume of the VM's templates was created.
pub fn data_volume_created(dv: &str) -> Note {
    Note::normal(
        "SuccessfulDataVolumeCreate",
        format!("Created DataVolume {dv}"),
    )
}

/// Creating a DataVolume of the VM's templates failed.
pub fn data_volume_failed(dv: &str, error: &str) -> Note {
    Note::warning(
        "FailedDataVolumeCreate",
        format!("Error creating DataVolume {dv}: {error}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn upstream_reasons_and_types() {
        let cases = [
            (created("vm1"), EventType::Normal, "SuccessfulCreate"),
            (failed_create("no"), EventType::Warning, "FailedCreate"),
            (deleted("u1"), EventType::Normal, "SuccessfulDelete"),
            (
                failed_delete("vm1", "no"),
                EventType::Warning,
                "FailedDelete",
            ),
            (
                data_volume_created("d"),
                EventType::Normal,
                "SuccessfulDataVolumeCreate",
            ),
            (
                data_volume_failed("d", "no"),
                EventType::Warning,
                "FailedDataVolumeCreate",
            ),
        ];
        for (note, type_, reason) in cases {
            assert_eq!((note.type_, note.reason), (type_, reason));
        }
        assert_eq!(
            created("vm1").message,
            "Started the virtual machine by creating the new virtual machine instance vm1"
        );
        assert_eq!(
            deleted("u1").message,
            "Stopped the virtual machine by deleting the virtual machine instance u1"
        );
    }
}
