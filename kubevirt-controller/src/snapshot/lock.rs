//! The VM locks: a snapshot holds its VM through `status.snapshotInProgress` (and the
//! `snapshot-source-protection` finalizer), a restore through `status.restoreInProgress`. These
//! functions decide whether a lock may be taken, as upstream's `vmSnapshotSource.Lock` and
//! `vmRestoreTarget.UpdateRestoreInProgress` do.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kubevirt_api::cdi::v1beta1::DataVolume;
use kubevirt_api::core::v1::VirtualMachine;

use super::{SOURCE_FINALIZER, has_finalizer, volumes::claim_of};

/// The lock message while a snapshot does not hold its VM.
pub const NOT_LOCKED: &str = "Source not locked";
/// The lock message while it does.
pub const LOCKED: &str = "Source locked and operation in progress";

/// Whether snapshot `name` holds `vm`.
pub fn snapshot_holds(vm: &VirtualMachine, name: &str) -> bool {
    vm.status
        .as_ref()
        .and_then(|s| s.snapshot_in_progress.as_deref())
        == Some(name)
        && has_finalizer(&vm.metadata, SOURCE_FINALIZER)
}

/// Why snapshot `name` cannot lock `vm` now (the text upstream appends to "Source not locked"),
/// or `None` when it can: every claim the VM reads exists, is bound, is not being deleted and,
/// for a DataVolume, is populated; no other snapshot or a restore holds the VM.
pub fn snapshot_blocker(
    vm: &VirtualMachine,
    name: &str,
    claims: &BTreeMap<String, PersistentVolumeClaim>,
    data_volumes: &BTreeMap<String, DataVolume>,
) -> Option<String> {
    let ns = vm.metadata.namespace.as_deref().unwrap_or_default();
    let vm_name = vm.metadata.name.as_deref().unwrap_or_default();
    for v in crate::vm::storage::volumes(vm) {
        let Some(claim_name) = claim_of(v) else {
            continue;
        };
        let problem = match claims.get(claim_name) {
            None => Some("volume doesnt exist"),
            Some(c) if c.metadata.deletion_timestamp.is_some() => Some("volume is being deleted"),
            Some(c) if c.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") => {
                Some("volume not bound")
            }
            Some(_) if v.data_volume.is_some() && !populated(data_volumes.get(claim_name)) => {
                Some("volume not populated")
            }
            Some(_) => None,
        };
        if let Some(p) = problem {
            return Some(format!(" source {ns}/{vm_name} {p}: {claim_name}"));
        }
    }
    let status = vm.status.as_ref();
    if let Some(other) = status
        .and_then(|s| s.snapshot_in_progress.as_deref())
        .filter(|o| *o != name)
    {
        return Some(format!(" snapshot {other:?} in progress"));
    }
    if let Some(restore) = status.and_then(|s| s.restore_in_progress.as_deref()) {
        return Some(format!(" restore {restore:?} in progress"));
    }
    None
}

/// A DataVolume counts as populated once Succeeded (a claim without one was populated by
/// whoever made it).
fn populated(dv: Option<&DataVolume>) -> bool {
    dv.is_none_or(|d| d.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
}

/// Whether restore `name` may hold `vm`: `Err` (upstream's words) while another restore does.
pub fn restore_may_lock(vm: &VirtualMachine, name: &str) -> Result<(), String> {
    match vm
        .status
        .as_ref()
        .and_then(|s| s.restore_in_progress.as_deref())
    {
        Some(other) if other != name => Err(format!("vm restore {other} in progress")),
        _ => Ok(()),
    }
}

/// Whether a restore holds `vm` (the VM controller starts no instance then).
pub fn restore_holds(vm: &VirtualMachine) -> bool {
    vm.status
        .as_ref()
        .is_some_and(|s| s.restore_in_progress.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::testing::{claims, vm};
    use serde_json::json;

    fn dv(phase: &str) -> BTreeMap<String, DataVolume> {
        let dv: DataVolume = serde_json::from_value(json!({
            "metadata": {"name": "vm1-root"},
            "spec": {"source": {"blank": {}}},
            "status": {"phase": phase}
        }))
        .expect("the DataVolume decodes");
        [("vm1-root".to_string(), dv)].into()
    }

    #[test]
    fn a_vm_with_bound_populated_claims_can_be_locked() {
        assert_eq!(
            snapshot_blocker(&vm(), "s1", &claims(), &dv("Succeeded")),
            None
        );
    }

    #[test]
    fn unready_volumes_block_the_lock_naming_the_claim() {
        let mut c = claims();
        assert_eq!(
            snapshot_blocker(&vm(), "s1", &c, &dv("ImportInProgress")).as_deref(),
            Some(" source ns/vm1 volume not populated: vm1-root")
        );
        c.get_mut("data-claim")
            .and_then(|c| c.status.as_mut())
            .expect("status")
            .phase = Some("Pending".into());
        assert_eq!(
            snapshot_blocker(&vm(), "s1", &c, &dv("Succeeded")).as_deref(),
            Some(" source ns/vm1 volume not bound: data-claim")
        );
        c.remove("data-claim");
        assert_eq!(
            snapshot_blocker(&vm(), "s1", &c, &dv("Succeeded")).as_deref(),
            Some(" source ns/vm1 volume doesnt exist: data-claim")
        );
    }

    #[test]
    fn one_operation_holds_a_vm_at_a_time() {
        let mut v = vm();
        let status = v.status.get_or_insert_with(Default::default);
        status.snapshot_in_progress = Some("other".into());
        assert_eq!(
            snapshot_blocker(&v, "s1", &claims(), &dv("Succeeded")).as_deref(),
            Some(" snapshot \"other\" in progress")
        );
        assert_eq!(
            snapshot_blocker(&v, "other", &claims(), &dv("Succeeded")),
            None
        );
        assert!(
            !snapshot_holds(&v, "other"),
            "the finalizer is part of the lock"
        );
        v.metadata.finalizers = Some(vec![SOURCE_FINALIZER.into()]);
        assert!(snapshot_holds(&v, "other"));

        let mut v = vm();
        v.status
            .get_or_insert_with(Default::default)
            .restore_in_progress = Some("r1".into());
        assert_eq!(
            snapshot_blocker(&v, "s1", &claims(), &dv("Succeeded")).as_deref(),
            Some(" restore \"r1\" in progress")
        );
        assert!(restore_holds(&v));
        assert_eq!(restore_may_lock(&v, "r1"), Ok(()));
        assert_eq!(
            restore_may_lock(&v, "r2"),
            Err("vm restore r1 in progress".into())
        );
        assert!(!restore_holds(&vm()));
    }
}
