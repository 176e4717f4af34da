//! The parts of upstream's VirtualMachineRestore admitter that look at other objects (the
//! target VM and its instance, the snapshot, the restores in progress), as a pure function over
//! JSON. The object's own rules (kinds, policies, an immutable spec) are kubevirt-api's
//! `validation`; these need the cluster's state, so the server runs them on create with what
//! it has stored.

use serde_json::Value;

use super::schema::Cause;

/// Storage name of VirtualMachines.
pub const VMS: &str = "kubevirt.io/virtualmachines";
/// Storage name of VirtualMachineSnapshots.
pub const SNAPSHOTS: &str = "snapshot.kubevirt.io/virtualmachinesnapshots";
/// Storage name of VirtualMachineRestores.
pub const RESTORES: &str = "snapshot.kubevirt.io/virtualmachinerestores";

/// What a new restore is checked against.
#[derive(Clone, Copy, Debug)]
pub struct RestoreFacts<'a> {
    /// The VM `spec.target.name` names, if it exists.
    pub target: Option<&'a Value>,
    /// The snapshot `spec.virtualMachineSnapshotName` names, if it exists.
    pub snapshot: Option<&'a Value>,
    /// The restores of the namespace.
    pub restores: &'a [Value],
}

fn invalid(field: &str, message: String) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueInvalid",
        message,
    }
}

/// Upstream's create-time causes for `restore`, in its words: the snapshot must exist, not have
/// failed and be ready; an existing target must be the snapshot's source (a different VM is
/// restored to a new name); no other restore of the same target may be in progress. A running
/// target is no cause: the restore waits for it, or stops it, as its `targetReadinessPolicy`
/// says (the restore controller's part).
pub fn restore_causes(restore: &Value, f: RestoreFacts<'_>) -> Vec<Cause> {
    let mut out = Vec::new();
    let snapshot_field = "spec.virtualMachineSnapshotName";
    let snapshot_name = restore["spec"]["virtualMachineSnapshotName"]
        .as_str()
        .unwrap_or_default();
    match f.snapshot {
        None => out.push(invalid(
            snapshot_field,
            format!("VirtualMachineSnapshot {snapshot_name:?} does not exist"),
        )),
        Some(s) => {
            let status = &s["status"];
            if status["phase"] == "Failed" {
                out.push(invalid(
                    snapshot_field,
                    format!(
                        "VirtualMachineSnapshot {snapshot_name:?} has failed and is invalid to use"
                    ),
                ));
            }
            if status["readyToUse"] != true {
                out.push(invalid(
                    snapshot_field,
                    format!("VirtualMachineSnapshot {snapshot_name:?} is not ready to use"),
                ));
            }
            let source_uid = status["sourceUID"].as_str();
            let target_uid = f.target.and_then(|t| t["metadata"]["uid"].as_str());
            if let (Some(s), Some(t)) = (source_uid, target_uid)
                && s != t
            {
                out.push(invalid(
                    snapshot_field,
                    "when snapshot source and restore target VMs are different - target VM must not exist"
                        .into(),
                ));
            }
        }
    }
    for r in f.restores {
        let complete = r["status"]["complete"] == true;
        if !complete && r["spec"]["target"] == restore["spec"]["target"] {
            let name = r["metadata"]["name"].as_str().unwrap_or_default();
            out.push(invalid(
                "spec.target",
                format!("VirtualMachineRestore {name:?} in progress"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn restore(target: &str) -> Value {
        json!({"metadata": {"name": "r1"},
               "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target},
                        "virtualMachineSnapshotName": "s1"}})
    }

    fn vm(uid: &str) -> Value {
        json!({"metadata": {"name": "vm1", "uid": uid}})
    }

    fn snapshot(ready: bool, phase: &str) -> Value {
        json!({"metadata": {"name": "s1"},
               "status": {"readyToUse": ready, "phase": phase, "sourceUID": "vm-uid"}})
    }

    fn messages(c: Vec<Cause>) -> Vec<(String, String)> {
        c.into_iter().map(|c| (c.field, c.message)).collect()
    }

    #[test]
    fn a_stopped_source_vm_and_a_ready_snapshot_are_admitted() {
        let (v, s) = (vm("vm-uid"), snapshot(true, "Succeeded"));
        let facts = RestoreFacts {
            target: Some(&v),
            snapshot: Some(&s),
            restores: &[],
        };
        assert!(restore_causes(&restore("vm1"), facts).is_empty());
        let new = RestoreFacts {
            target: None,
            ..facts
        };
        assert!(restore_causes(&restore("vm2"), new).is_empty(), "a new VM");
    }

    #[test]
    fn a_missing_failed_or_unready_snapshot_is_refused() {
        let facts = |s| RestoreFacts {
            target: None,
            snapshot: s,
            restores: &[],
        };
        assert_eq!(
            messages(restore_causes(&restore("vm2"), facts(None)))[0].1,
            "VirtualMachineSnapshot \"s1\" does not exist"
        );
        let failed = snapshot(false, "Failed");
        let got: Vec<String> = messages(restore_causes(&restore("vm2"), facts(Some(&failed))))
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            got,
            [
                "VirtualMachineSnapshot \"s1\" has failed and is invalid to use",
                "VirtualMachineSnapshot \"s1\" is not ready to use"
            ]
        );
    }

    #[test]
    fn another_existing_vm_is_no_target() {
        let (v, s) = (vm("other-uid"), snapshot(true, "Succeeded"));
        let got = restore_causes(
            &restore("vm1"),
            RestoreFacts {
                target: Some(&v),
                snapshot: Some(&s),
                restores: &[],
            },
        );
        assert_eq!(
            messages(got)[0].1,
            "when snapshot source and restore target VMs are different - target VM must not exist"
        );
    }

    #[test]
    fn one_restore_of_a_target_at_a_time() {
        let s = snapshot(true, "Succeeded");
        let mut running = restore("vm1");
        running["metadata"]["name"] = json!("r0");
        let mut done = restore("vm1");
        done["status"] = json!({"complete": true});
        let facts = RestoreFacts {
            target: None,
            snapshot: Some(&s),
            restores: &[running, done],
        };
        assert_eq!(
            messages(restore_causes(&restore("vm1"), facts)),
            [(
                "spec.target".to_string(),
                "VirtualMachineRestore \"r0\" in progress".to_string()
            )]
        );
    }
}
