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
    for (i, patch) in r.spec.patches.iter().flatten().enumerate() {
        if let Err(why) = check_patch(patch) {
            errs.push(FieldError::invalid(spec.field("patches").index(i), &why));
        }
    }
}

/// The paths a restore's JSON patch may touch on the VM it creates (upstream's rule): labels,
/// annotations and anything under the spec.
const PATCHABLE: &[&str] = &["/metadata/labels/", "/metadata/annotations/", "/spec/"];

/// One entry of `spec.patches`: a single JSON patch operation (RFC 6902) as a string.
fn check_patch(patch: &str) -> Result<(), String> {
    let op: serde_json::Value = serde_json::from_str(patch)
        .map_err(|e| format!("not a JSON patch operation ({e}): {patch}"))?;
    let Some(path) = op.get("path").and_then(|p| p.as_str()) else {
        return Err(format!(
            "a patch is one JSON patch operation with a \"path\": {patch}"
        ));
    };
    let known = ["add", "remove", "replace", "move", "copy", "test"];
    if !op
        .get("op")
        .and_then(|o| o.as_str())
        .is_some_and(|o| known.contains(&o))
    {
        return Err(format!(
            "\"op\" must be one of {}: {patch}",
            known.join(", ")
        ));
    }
    if !PATCHABLE.iter().any(|p| path.starts_with(p)) {
        return Err(format!(
            "patching is valid only for elements under /spec/ only: {patch}"
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn restore(patches: serde_json::Value) -> Vec<String> {
        let r: VirtualMachineRestore = serde_json::from_value(json!({
            "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
            "metadata": {"name": "r1"},
            "spec": {"target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "new"},
                     "virtualMachineSnapshotName": "s1", "patches": patches}
        }))
        .unwrap();
        let mut errs = Vec::new();
        validate_restore(&r, &mut errs);
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn patches_touch_only_labels_annotations_and_the_spec() {
        assert!(
            restore(json!([
                r#"{"op": "replace", "path": "/spec/template/spec/domain/devices/interfaces/0/macAddress", "value": "02:00:00:00:00:01"}"#,
                r#"{"op": "add", "path": "/metadata/labels/restored", "value": "yes"}"#
            ]))
            .is_empty()
        );
        let got = restore(json!([
            r#"{"op": "replace", "path": "/metadata/name", "value": "x"}"#,
            "not json",
            r#"{"op": "frobnicate", "path": "/spec/x"}"#
        ]));
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0].starts_with("spec.patches[0]: patching is valid only for elements under /spec/"),
            "{got:?}"
        );
        assert!(
            got[1].starts_with("spec.patches[1]: not a JSON patch operation"),
            "{got:?}"
        );
        assert!(got[2].contains("\"op\" must be one of"), "{got:?}");
    }
}
