//! The events the migration controller records on a VirtualMachineInstanceMigration (upstream
//! virt-controller's migration reasons and messages).

use crate::events::Note;

/// `source.component` of the migration controller's events (upstream's virt-controller
/// reports as `virtualmachine-controller`).
pub const COMPONENT: &str = "virtualmachine-controller";

/// The migration's target pod was created.
pub fn target_created(pod: &str) -> Note {
    Note::normal(
        "SuccessfulCreate",
        format!("Created migration target pod {pod}"),
    )
}

/// The target pod could not be made.
pub fn target_failed(why: &str) -> Note {
    Note::warning("FailedCreate", format!("Error creating pod: {why}"))
}

/// The migration ended in `phase` (`Succeeded` or `Failed`, with the reason).
pub fn ended(phase: &str, why: Option<&str>) -> Option<Note> {
    match phase {
        super::phase::SUCCEEDED => Some(Note::normal(
            "SuccessfulMigration",
            "Source node reported migration succeeded",
        )),
        // Cancelled before it ran: upstream's words as they are.
        super::phase::FAILED if why == Some(super::plan::CANCELLED) => {
            Some(Note::warning("FailedMigration", super::plan::CANCELLED))
        }
        super::phase::FAILED => Some(Note::warning(
            "FailedMigration",
            format!(
                "Migration failed: {}",
                why.unwrap_or("no reason was reported")
            ),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn an_end_is_told_with_upstreams_reasons() {
        let ok = ended("Succeeded", None).expect("an event");
        assert_eq!(
            (ok.type_, ok.reason),
            (EventType::Normal, "SuccessfulMigration")
        );
        let failed = ended("Failed", Some("cut stream")).expect("an event");
        assert_eq!(
            (failed.type_, failed.reason),
            (EventType::Warning, "FailedMigration")
        );
        assert_eq!(failed.message, "Migration failed: cut stream");
        assert!(ended("Running", None).is_none());
    }
}
