//! The checks upstream's validating webhooks (virt-api admitters, CDI's webhook) run, as a library.
//!
//! Every check reports a [`FieldError`] naming the field path and saying what to change; nothing is
//! modified. [`validate`] checks one object; [`validate_update`] adds the rules that compare an
//! update with the stored object (immutable specs).

mod datavolume;
mod error;
mod names;
mod replicaset;
mod snapshot;
mod vm;
mod vmi;

pub use self::error::{ErrorKind, FieldError};
pub use self::names::{is_dns1123_label, is_dns1123_subdomain, is_mac_address};

use crate::object::Object;
use crate::path::FieldPath;

/// Validate one object as upstream's create webhook would.
pub fn validate(object: &Object) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = FieldPath::root().field("spec");
    match object {
        Object::VirtualMachine(vm) => vm::validate_vm(vm, &mut errs),
        Object::VirtualMachineInstance(vmi) => {
            vmi::validate_vmi_spec(&vmi.spec, &spec, vmi::MemorySource::Required, &mut errs)
        }
        Object::VirtualMachineInstanceReplicaSet(rs) => {
            replicaset::validate_replicaset(rs, &mut errs)
        }
        Object::DataVolume(dv) => datavolume::validate_dv_spec(&dv.spec, &spec, &mut errs),
        Object::VirtualMachineSnapshot(s) => snapshot::validate_snapshot(s, &mut errs),
        Object::VirtualMachineRestore(r) => snapshot::validate_restore(r, &mut errs),
        _ => {}
    }
    errs
}

/// Validate an update of `old` to `new` (both of the same kind) as upstream's update webhook would.
pub fn validate_update(old: &Object, new: &Object) -> Vec<FieldError> {
    let mut errs = validate(new);
    match (old, new) {
        (Object::VirtualMachineSnapshot(a), Object::VirtualMachineSnapshot(b))
            if a.spec != b.spec =>
        {
            errs.push(FieldError::forbidden(
                FieldPath::root().field("spec"),
                "the spec of a VirtualMachineSnapshot cannot be changed; create a new snapshot",
            ));
        }
        (Object::VirtualMachineRestore(a), Object::VirtualMachineRestore(b))
            if a.spec != b.spec =>
        {
            errs.push(FieldError::forbidden(
                FieldPath::root().field("spec"),
                "the spec of a VirtualMachineRestore cannot be changed; create a new restore",
            ));
        }
        (Object::DataVolume(a), Object::DataVolume(b))
            if a.spec.source != b.spec.source || a.spec.source_ref != b.spec.source_ref =>
        {
            errs.push(FieldError::forbidden(
                FieldPath::root().field("spec"),
                "the source of a DataVolume cannot be changed after creation",
            ));
        }
        _ => {}
    }
    errs
}

/// Report a list entry name that is empty or was seen before.
fn check_unique_name<'a>(
    name: &'a str,
    path: &FieldPath,
    seen: &mut std::collections::HashSet<&'a str>,
    what: &str,
    errs: &mut Vec<FieldError>,
) {
    if name.is_empty() {
        errs.push(FieldError::required(
            path.field("name"),
            &format!("every {what} needs a name"),
        ));
    } else if !seen.insert(name) {
        errs.push(FieldError::duplicate(
            path.field("name"),
            &format!("{what} name {name:?} is used more than once; names must be unique"),
        ));
    }
}

/// Report a value outside an allowed set.
fn check_one_of(
    value: Option<&str>,
    allowed: &[&str],
    path: FieldPath,
    errs: &mut Vec<FieldError>,
) {
    if let Some(v) = value
        && !allowed.contains(&v)
    {
        errs.push(FieldError::not_supported(path, v, allowed));
    }
}

/// The names of the fields set (not null) in a serialisable value: used for "exactly one of" checks
/// over upstream's union structs (volume sources, interface bindings, DataVolume sources).
fn set_fields<T: serde::Serialize>(value: &T, ignore: &[&str]) -> Vec<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(k, v)| !v.is_null() && !ignore.contains(&k.as_str()))
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}
