//! The defaults upstream's mutating webhooks (virt-api mutators, CDI) apply on create, as a library.
//!
//! Defaulting is idempotent (applying it twice changes nothing the second time) and deterministic
//! (the firmware UUID is derived from the object's namespace and name, not random), so a client
//! can run it locally and get what the server will store.

mod datavolume;
mod snapshot;
mod vm;
mod vmi;

pub use self::vmi::default_vmi_spec;

use crate::object::Object;

/// Upstream's `terminationGracePeriodSeconds` when a VMI sets none: how long a guest has to power
/// off after the ACPI power button before its VM is stopped.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// Cluster-wide settings that defaults depend on (upstream's `KubeVirt.spec.configuration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDefaults {
    /// `machine.type` when unset (upstream: `q35` on amd64).
    pub machine_type: String,
    /// `cpu.model` when unset (upstream: `host-model`).
    pub cpu_model: String,
    /// `architecture` when unset.
    pub architecture: String,
    /// Binding of the auto-attached pod interface: `bridge` (upstream's default) or `masquerade`.
    pub default_network_interface: String,
    /// `terminationGracePeriodSeconds` when unset (upstream: 30).
    pub termination_grace_period_seconds: i64,
}

impl Default for ClusterDefaults {
    fn default() -> Self {
        Self {
            machine_type: "q35".into(),
            cpu_model: "host-model".into(),
            architecture: "amd64".into(),
            default_network_interface: "bridge".into(),
            termination_grace_period_seconds: DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
        }
    }
}

impl ClusterDefaults {
    /// The defaults of a kubevirt-rs cluster: upstream's, with the auto-attached pod interface
    /// bound through `masquerade`, the binding kubevirt-rs provides. The API server and the
    /// launcher both apply these, so a VMI means the same to both.
    pub fn kubevirt_rs() -> Self {
        Self {
            default_network_interface: "masquerade".into(),
            ..Self::default()
        }
    }
}

/// Apply the create-time defaults of `object`'s kind.
pub fn apply(object: &mut Object, cluster: &ClusterDefaults) {
    match object {
        Object::VirtualMachine(vm) => vm::default_vm(vm, cluster),
        Object::VirtualMachineInstance(vmi) => {
            let key = object_key(&vmi.metadata);
            default_vmi_spec(&mut vmi.spec, &key, cluster);
        }
        Object::VirtualMachineInstanceReplicaSet(rs) => {
            rs.spec.replicas.get_or_insert(1);
        }
        Object::DataVolume(dv) => datavolume::default_dv_spec(&mut dv.spec),
        Object::VirtualMachineSnapshot(s) => snapshot::default_snapshot(s),
        Object::VirtualMachineRestore(r) => snapshot::default_restore(r),
        _ => {}
    }
}

/// `namespace/name` (or `generateName`), the seed of derived identifiers.
fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    let name = meta
        .name
        .as_deref()
        .or(meta.generate_name.as_deref())
        .unwrap_or_default();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        name
    )
}
