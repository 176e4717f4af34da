//! The events the VMI controller records on a VMI (upstream virt-controller's reasons and
//! messages; upstream's VMI controller reports as `virtualmachine-controller` too).

use crate::events::Note;

/// `source.component` of the VMI controller's events.
pub const COMPONENT: &str = "virtualmachine-controller";

/// The VMI's virt-launcher pod was created.
pub fn pod_created(pod: &str) -> Note {
    Note::normal(
        "SuccessfulCreate",
        format!("Created virtual machine pod {pod}"),
    )
}

/// Creating the VMI's virt-launcher pod failed (rendering or the API server refused it).
pub fn pod_failed(error: &str) -> Note {
    Note::warning("FailedCreate", format!("Error creating pod: {error}"))
}

/// A virt-launcher pod of the VMI was deleted.
pub fn pod_deleted(pod: &str) -> Note {
    Note::normal(
        "SuccessfulDelete",
        format!("Deleted virtual machine pod {pod}"),
    )
}

/// Deleting a virt-launcher pod of the VMI failed.
pub fn pod_delete_failed(error: &str) -> Note {
    Note::warning("FailedDelete", format!("Error deleting pod: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn upstream_reasons_and_messages() {
        let made = pod_created("virt-launcher-vm-abcde");
        assert_eq!(
            (made.type_, made.reason),
            (EventType::Normal, "SuccessfulCreate")
        );
        assert_eq!(
            made.message,
            "Created virtual machine pod virt-launcher-vm-abcde"
        );
        let failed = pod_failed("quota");
        assert_eq!(
            (failed.type_, failed.reason),
            (EventType::Warning, "FailedCreate")
        );
        assert_eq!(failed.message, "Error creating pod: quota");
        assert_eq!(pod_deleted("p").reason, "SuccessfulDelete");
        assert_eq!(pod_delete_failed("x").type_, EventType::Warning);
    }
}
