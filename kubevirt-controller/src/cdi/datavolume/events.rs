//! The events the DataVolume controller records on a DataVolume when its status moves on
//! (upstream CDI's reasons and messages, from `datavolume-controller`): none while nothing
//! changes, so a resync is quiet.

use kubevirt_api::cdi::v1beta1::{DataVolume, DataVolumeStatus};

use super::importer::{Source, source_of};
use crate::events::Note;

/// `source.component` of the DataVolume controller's events (CDI's).
pub const COMPONENT: &str = "datavolume-controller";

/// What moving from `old` to `new` tells about `dv` (whose claim has the DataVolume's name).
pub fn transition(
    dv: &DataVolume,
    old: Option<&DataVolumeStatus>,
    new: &DataVolumeStatus,
) -> Vec<Note> {
    let claim = dv.metadata.name.clone().unwrap_or_default();
    let mut notes = Vec::new();
    let bound = |s: Option<&DataVolumeStatus>| {
        s.and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Bound"))
            .is_some_and(|c| c.status == "True")
    };
    let old_phase = old.and_then(|s| s.phase.as_deref());
    let new_phase = new.phase.as_deref();
    if old_phase == new_phase && bound(old) == bound(Some(new)) {
        return notes;
    }
    if new_phase == Some("Pending") && old_phase != Some("Pending") {
        notes.push(Note::normal("Pending", format!("PVC {claim} Pending")));
    }
    if bound(Some(new)) && !bound(old) {
        notes.push(Note::normal("Bound", format!("PVC {claim} Bound")));
    }
    if old_phase == new_phase {
        return notes;
    }
    let source = source_of(dv).ok();
    let (from_ns, from) = match &source {
        Some(Source::Clone(p)) if p.namespace.is_empty() => (
            dv.metadata.namespace.clone().unwrap_or_default(),
            p.name.clone(),
        ),
        Some(Source::Clone(p)) => (p.namespace.clone(), p.name.clone()),
        _ => (String::new(), String::new()),
    };
    let ns = dv.metadata.namespace.clone().unwrap_or_default();
    let clone = |what: &str| format!("Cloning from {from_ns}/{from} into {ns}/{claim} {what}");
    let note = match (&source, new_phase) {
        (_, Some("ImportScheduled")) => {
            Note::normal("ImportScheduled", format!("Import into {claim} scheduled"))
        }
        (_, Some("ImportInProgress")) => Note::normal(
            "ImportInProgress",
            format!("Import into {claim} in progress"),
        ),
        (_, Some("CloneScheduled")) => Note::normal("CloneScheduled", clone("scheduled")),
        (_, Some("CloneInProgress")) => Note::normal("CloneInProgress", clone("in progress")),
        (_, Some("UploadScheduled")) => {
            Note::normal("UploadScheduled", format!("Upload into {claim} scheduled"))
        }
        (_, Some("UploadReady")) => {
            Note::normal("UploadReady", format!("Upload into {claim} ready"))
        }
        (Some(Source::Clone(_)), Some("Succeeded")) => Note::normal(
            "CloneSucceeded",
            format!("Successfully cloned from {from_ns}/{from} into {ns}/{claim}"),
        ),
        (Some(Source::Upload), Some("Succeeded")) => Note::normal(
            "UploadSucceeded",
            format!("Successfully uploaded into {claim}"),
        ),
        (_, Some("Succeeded")) => Note::normal(
            "ImportSucceeded",
            format!("Successfully imported into PVC {claim}"),
        ),
        (Some(Source::Clone(_)), Some("Failed")) => Note::warning("CloneFailed", clone("failed")),
        (Some(Source::Upload), Some("Failed")) => {
            Note::warning("UploadFailed", format!("Upload into {claim} failed"))
        }
        (_, Some("Failed")) => {
            Note::warning("ImportFailed", format!("Failed to import into PVC {claim}"))
        }
        _ => return notes,
    };
    notes.push(note);
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubevirt_api::cdi::v1beta1::DataVolumeCondition;

    fn dv() -> DataVolume {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": "disk", "namespace": "ns"},
            "spec": {"source": {"http": {"url": "http://x/y.img"}},
                     "storage": {"resources": {"requests": {"storage": "1Mi"}}}}
        }))
        .expect("a DataVolume")
    }

    fn status(phase: &str, bound: bool) -> DataVolumeStatus {
        DataVolumeStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![DataVolumeCondition {
                type_: "Bound".into(),
                status: if bound { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn reasons(old: Option<&DataVolumeStatus>, new: &DataVolumeStatus) -> Vec<&'static str> {
        transition(&dv(), old, new)
            .iter()
            .map(|n| n.reason)
            .collect()
    }

    #[test]
    fn an_import_tells_cdis_story_once() {
        let pending = status("Pending", false);
        assert_eq!(reasons(None, &pending), ["Pending"]);
        assert!(reasons(Some(&pending), &pending).is_empty());
        let scheduled = status("ImportScheduled", true);
        assert_eq!(
            reasons(Some(&pending), &scheduled),
            ["Bound", "ImportScheduled"]
        );
        let running = status("ImportInProgress", true);
        assert_eq!(reasons(Some(&scheduled), &running), ["ImportInProgress"]);
        assert!(reasons(Some(&running), &running).is_empty());
        let done = status("Succeeded", true);
        let notes = transition(&dv(), Some(&running), &done);
        assert_eq!(notes[0].reason, "ImportSucceeded");
        assert_eq!(notes[0].message, "Successfully imported into PVC disk");
    }

    #[test]
    fn a_failed_import_is_a_warning() {
        let notes = transition(
            &dv(),
            Some(&status("ImportInProgress", true)),
            &status("Failed", true),
        );
        assert_eq!(notes[0].reason, "ImportFailed");
        assert_eq!(notes[0].type_, crate::events::EventType::Warning);
    }
}
