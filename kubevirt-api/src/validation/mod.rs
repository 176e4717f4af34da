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
pub(crate) use self::vm::RUNNING_AND_RUN_STRATEGY;

use crate::cdi::v1beta1::DataVolume;
use crate::core::v1::{VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceReplicaSet};
use crate::object::Object;
use crate::path::FieldPath;
use crate::snapshot::v1beta1::{VirtualMachineRestore, VirtualMachineSnapshot};

/// Validate one object as upstream's create webhook would.
pub fn validate(object: &Object) -> Vec<FieldError> {
    object.validate()
}

/// Validate an update of `old` to `new` (both of the same kind) as upstream's update webhook would.
/// Objects of different kinds get the create checks of `new`.
pub fn validate_update(old: &Object, new: &Object) -> Vec<FieldError> {
    new.validate_update(old)
}

/// The rules of one kind, the single source [`crate::Kind::validate`] and the local API server use.
/// Kinds upstream's webhooks do not check keep the empty defaults.
pub(crate) trait Rules {
    /// Push the create-time problems of `self`.
    fn check(&self, _errs: &mut Vec<FieldError>) {}
    /// Push the problems only an update has (after the create checks ran).
    fn check_update(&self, _old: &Self, _errs: &mut Vec<FieldError>) {}
}

impl Rules for VirtualMachine {
    fn check(&self, errs: &mut Vec<FieldError>) {
        vm::validate_vm(self, errs);
    }
    fn check_update(&self, old: &Self, errs: &mut Vec<FieldError>) {
        vm::validate_vm_update(self, old, errs);
    }
}

impl Rules for VirtualMachineInstance {
    fn check(&self, errs: &mut Vec<FieldError>) {
        let spec = FieldPath::root().field("spec");
        vmi::validate_vmi_spec(&self.spec, &spec, vmi::MemorySource::Required, errs);
    }
}

impl Rules for VirtualMachineInstanceReplicaSet {
    fn check(&self, errs: &mut Vec<FieldError>) {
        replicaset::validate_replicaset(self, errs);
    }
}

impl Rules for DataVolume {
    fn check(&self, errs: &mut Vec<FieldError>) {
        datavolume::validate_dv_spec(&self.spec, &FieldPath::root().field("spec"), errs);
    }
    fn check_update(&self, old: &Self, errs: &mut Vec<FieldError>) {
        if old.spec.source != self.spec.source || old.spec.source_ref != self.spec.source_ref {
            errs.push(FieldError::forbidden(
                FieldPath::root().field("spec"),
                "the source of a DataVolume cannot be changed after creation",
            ));
        }
    }
}

impl Rules for VirtualMachineSnapshot {
    fn check(&self, errs: &mut Vec<FieldError>) {
        snapshot::validate_snapshot(self, errs);
    }
    fn check_update(&self, old: &Self, errs: &mut Vec<FieldError>) {
        if old.spec != self.spec {
            errs.push(FieldError::forbidden(
                FieldPath::root().field("spec"),
                "the spec of a VirtualMachineSnapshot cannot be changed; create a new snapshot",
            ));
        }
    }
}

impl Rules for VirtualMachineRestore {
    fn check(&self, errs: &mut Vec<FieldError>) {
        snapshot::validate_restore(self, errs);
    }
    fn check_update(&self, old: &Self, errs: &mut Vec<FieldError>) {
        if old.spec != self.spec {
            errs.push(FieldError::forbidden(
                FieldPath::root().field("spec"),
                "the spec of a VirtualMachineRestore cannot be changed; create a new restore",
            ));
        }
    }
}

macro_rules! no_rules {
    ($($ty:ty),* $(,)?) => { $( impl Rules for $ty {} )* };
}

kinds_without_webhook_rules!(no_rules);

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
