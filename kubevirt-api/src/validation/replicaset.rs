//! VirtualMachineInstanceReplicaSet checks (upstream's `replicaset-admitter`).

use super::FieldError;
use super::vmi::{MemorySource, validate_vmi_spec};
use crate::core::v1::VirtualMachineInstanceReplicaSet;
use crate::labels::{selector_is_empty, selector_matches};
use crate::path::FieldPath;

pub(super) fn validate_replicaset(
    rs: &VirtualMachineInstanceReplicaSet,
    errs: &mut Vec<FieldError>,
) {
    let spec = FieldPath::root().field("spec");
    if rs.spec.replicas.is_some_and(|r| r < 0) {
        errs.push(FieldError::invalid(
            spec.field("replicas"),
            "replicas must be 0 or more",
        ));
    }
    let labels = rs
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if labels.is_empty() {
        errs.push(FieldError::required(
            spec.field("template").field("metadata").field("labels"),
            "the template needs labels for the selector to match",
        ));
    }
    if selector_is_empty(&rs.spec.selector) {
        errs.push(FieldError::required(
            spec.field("selector"),
            "a selector is required; it must match the template labels",
        ));
    } else if !selector_matches(&rs.spec.selector, &labels) {
        errs.push(FieldError::invalid(spec.field("selector"), "the selector does not match the template labels; the replica set could never see its VMIs"));
    }
    let template = spec.field("template").field("spec");
    match &rs.spec.template.spec {
        Some(vmi) => validate_vmi_spec(vmi, &template, MemorySource::Required, errs),
        None => errs.push(FieldError::required(
            template,
            "the template needs a VMI spec",
        )),
    }
}
