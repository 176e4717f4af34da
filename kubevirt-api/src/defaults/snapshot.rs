//! Snapshot and restore defaults (upstream's documented defaults, made explicit).

use crate::snapshot::v1beta1::{VirtualMachineRestore, VirtualMachineSnapshot};

pub(super) fn default_snapshot(s: &mut VirtualMachineSnapshot) {
    s.spec.failure_deadline.get_or_insert_with(|| "5m0s".into());
}

pub(super) fn default_restore(r: &mut VirtualMachineRestore) {
    r.spec
        .target_readiness_policy
        .get_or_insert_with(|| "WaitGracePeriod".into());
    r.spec
        .volume_restore_policy
        .get_or_insert_with(|| "RandomizeNames".into());
}
