//! VirtualMachineSnapshot and VirtualMachineRestore checks (upstream's snapshot/restore admitters).

use super::{FieldError, check_one_of};
use crate::path::FieldPath;
use crate::snapshot::v1beta1::{VirtualMachineRestore, VirtualMachineSnapshot};
use k8s_openapi::api::core::v1::TypedLocalObjectReference;

const READINESS_POLICIES: &[&str] = &[
    "StopTarget",
    "WaitGracePeriod",
    "WaitEventually",
    "FailImmediate",
];

pub(super) fn validate_snapshot(s: &VirtualMachineSnapshot, errs: &mut Vec<FieldError>) {
    let spec = FieldPath::root().field("spec");
    check_vm_ref(
        &s.spec.source,
        spec.field("source"),
        "snapshot source",
        errs,
    );
    check_one_of(
        s.spec.deletion_policy.as_deref(),
        &["Delete", "Retain"],
        spec.field("deletionPolicy"),
        errs,
    );
    if let Some(d) = s.spec.failure_deadline.as_deref()
        && crate::duration::parse_go_duration(d).is_none()
    {
        errs.push(FieldError::invalid(
            spec.field("failureDeadline"),
            &format!("{d:?} is not a duration like 5m or 1h30m"),
        ));
    }
}

pub(super) fn validate_restore(r: &VirtualMachineRestore, errs: &mut Vec<FieldError>) {
    let spec = FieldPath::root().field("spec");
    check_vm_ref(&r.spec.target, spec.field("target"), "restore target", errs);
    if r.spec.virtual_machine_snapshot_name.is_empty() {
        errs.push(FieldError::required(
            spec.field("virtualMachineSnapshotName"),
            "name the snapshot to restore",
        ));
    }
    check_one_of(
        r.spec.target_readiness_policy.as_deref(),
        READINESS_POLICIES,
        spec.field("targetReadinessPolicy"),
        errs,
    );
    check_one_of(
        r.spec.volume_restore_policy.as_deref(),
        &["RandomizeNames", "InPlace", "PrefixTargetName"],
        spec.field("volumeRestorePolicy"),
        errs,
    );
    check_one_of(
        r.spec.volume_ownership_policy.as_deref(),
        &["Vm", "None"],
        spec.field("volumeOwnershipPolicy"),
        errs,
    );
}

fn check_vm_ref(
    r: &TypedLocalObjectReference,
    path: FieldPath,
    what: &str,
    errs: &mut Vec<FieldError>,
) {
    if r.kind != "VirtualMachine" {
        errs.push(FieldError::not_supported(
            path.field("kind"),
            &r.kind,
            &["VirtualMachine"],
        ));
    }
    if r.api_group.as_deref().is_some_and(|g| g != "kubevirt.io") {
        errs.push(FieldError::not_supported(
            path.field("apiGroup"),
            r.api_group.as_deref().unwrap_or_default(),
            &["kubevirt.io"],
        ));
    }
    if r.name.is_empty() {
        errs.push(FieldError::required(
            path.field("name"),
            &format!("name the VirtualMachine of this {what}"),
        ));
    }
}
