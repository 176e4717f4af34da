//! `status.printableStatus`: the one word `kubectl get vm` shows (upstream's
//! `setPrintableStatus`; the first state that matches wins).

use kubevirt_api::core::v1::VirtualMachineInstance;

use super::instance::{condition, is_deleting, is_final, phase};

/// What the sync is about to do, as far as the printable status cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Nothing.
    Keep,
    /// An instance is about to be created.
    Start,
    /// The instance is about to be deleted.
    Stop,
}

/// What the VM's storage says, as far as the printable status cares.
#[derive(Clone, Copy, Debug, Default)]
pub struct StorageFacts {
    /// A DataVolume its volumes use failed, or its importer stopped on an error.
    pub data_volume_error: bool,
    /// A DataVolume its volumes use is still being populated.
    pub provisioning: bool,
    /// The VM is set to start and a claim its volumes use is not bound yet.
    pub waiting_for_binding: bool,
}

/// Everything the printable status depends on.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    /// The VM is being deleted.
    pub vm_deleting: bool,
    /// Its instance.
    pub vmi: Option<&'a VirtualMachineInstance>,
    /// What this sync does.
    pub intent: Intent,
    /// Failed starts are counted and the strategy retries them (Always, RerunOnFailure, Once).
    pub crash_looping: bool,
    /// Its storage.
    pub storage: StorageFacts,
}

/// The printable status for `facts`.
pub fn printable_status(facts: Facts<'_>) -> &'static str {
    let live = facts.vmi.filter(|v| !is_final(v));
    if facts.vm_deleting {
        return "Terminating";
    }
    if let Some(v) = live
        && (is_deleting(v) || facts.intent == Intent::Stop)
    {
        return "Stopping";
    }
    if let Some(v) = live
        && phase(v) == "Running"
    {
        return if condition(v, "Paused").is_some_and(|(s, _)| s == "True") {
            "Paused"
        } else {
            "Running"
        };
    }
    let synchronized = live.and_then(|v| condition(v, "Synchronized"));
    if synchronized == Some(("False", Some("FailedPvcNotFound"))) {
        return "ErrorPvcNotFound";
    }
    if facts.storage.data_volume_error {
        return "DataVolumeError";
    }
    if let Some(v) = live
        && condition(v, "PodScheduled") == Some(("False", Some("Unschedulable")))
    {
        return "ErrorUnschedulable";
    }
    if facts.storage.provisioning {
        return "Provisioning";
    }
    if facts.storage.waiting_for_binding {
        return "WaitingForVolumeBinding";
    }
    match synchronized {
        Some(("False", Some("ErrImagePull"))) => return "ErrImagePull",
        Some(("False", Some("ImagePullBackOff"))) => return "ImagePullBackOff",
        _ => {}
    }
    if facts.intent == Intent::Start
        || live.is_some_and(|v| matches!(phase(v), "" | "Pending" | "Scheduling" | "Scheduled"))
    {
        return "Starting";
    }
    if live.is_none() {
        return if facts.crash_looping {
            "CrashLoopBackOff"
        } else {
            "Stopped"
        };
    }
    "Unknown"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(phase: &str, conditions: serde_json::Value, deleting: bool) -> VirtualMachineInstance {
        let mut meta = serde_json::json!({"name": "v"});
        if deleting {
            meta["deletionTimestamp"] = "2026-11-28T12:00:00Z".into();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": meta,
            "spec": {"domain": {"devices": {}}},
            "status": {"phase": phase, "conditions": conditions}
        }))
        .unwrap()
    }

    fn facts(vmi: Option<&VirtualMachineInstance>, intent: Intent) -> Facts<'_> {
        Facts {
            vm_deleting: false,
            vmi,
            intent,
            crash_looping: false,
            storage: StorageFacts::default(),
        }
    }

    #[test]
    fn each_state_in_upstream_order() {
        let none = serde_json::json!([]);
        let running = vmi("Running", none.clone(), false);
        let paused = vmi(
            "Running",
            serde_json::json!([{"type": "Paused", "status": "True"}]),
            false,
        );
        let pending = vmi("Pending", none.clone(), false);
        let unschedulable = vmi(
            "Scheduling",
            serde_json::json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]),
            false,
        );
        let failed = vmi("Failed", none.clone(), false);
        let going = vmi("Running", none.clone(), true);
        let ps = |v, i| printable_status(facts(v, i));
        assert_eq!(ps(Some(&running), Intent::Keep), "Running");
        assert_eq!(ps(Some(&paused), Intent::Keep), "Paused");
        assert_eq!(ps(Some(&running), Intent::Stop), "Stopping");
        assert_eq!(ps(Some(&going), Intent::Keep), "Stopping");
        assert_eq!(ps(Some(&pending), Intent::Keep), "Starting");
        assert_eq!(ps(Some(&unschedulable), Intent::Keep), "ErrorUnschedulable");
        assert_eq!(ps(None, Intent::Start), "Starting");
        assert_eq!(ps(None, Intent::Keep), "Stopped");
        assert_eq!(ps(Some(&failed), Intent::Keep), "Stopped");
        assert_eq!(ps(Some(&failed), Intent::Stop), "Stopped");
        let looping = Facts {
            crash_looping: true,
            ..facts(Some(&failed), Intent::Keep)
        };
        assert_eq!(printable_status(looping), "CrashLoopBackOff");
        let deleting = Facts {
            vm_deleting: true,
            ..facts(Some(&running), Intent::Keep)
        };
        assert_eq!(printable_status(deleting), "Terminating");
    }

    #[test]
    fn storage_states_in_upstream_order() {
        let none = serde_json::json!([]);
        let pending = vmi("Pending", none.clone(), false);
        let running = vmi("Running", none, false);
        let pvc_missing = vmi(
            "Pending",
            serde_json::json!([{"type": "Synchronized", "status": "False", "reason": "FailedPvcNotFound"}]),
            false,
        );
        let pulling = vmi(
            "Scheduled",
            serde_json::json!([{"type": "Synchronized", "status": "False", "reason": "ImagePullBackOff"}]),
            false,
        );
        let with = |vmi, storage| {
            printable_status(Facts {
                storage,
                ..facts(vmi, Intent::Start)
            })
        };
        let provisioning = StorageFacts {
            provisioning: true,
            ..Default::default()
        };
        let binding = StorageFacts {
            waiting_for_binding: true,
            ..Default::default()
        };
        let error = StorageFacts {
            data_volume_error: true,
            provisioning: true,
            waiting_for_binding: true,
        };
        assert_eq!(with(None, provisioning), "Provisioning");
        assert_eq!(with(Some(&pending), binding), "WaitingForVolumeBinding");
        assert_eq!(with(None, error), "DataVolumeError");
        assert_eq!(with(Some(&pvc_missing), error), "ErrorPvcNotFound");
        assert_eq!(
            with(Some(&pulling), StorageFacts::default()),
            "ImagePullBackOff"
        );
        // A running guest is Running whatever its storage says.
        assert_eq!(with(Some(&running), error), "Running");
    }
}
