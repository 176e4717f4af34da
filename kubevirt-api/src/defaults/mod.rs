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

use crate::cdi::v1beta1::DataVolume;
use crate::core::v1::{VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceReplicaSet};
use crate::object::Object;
use crate::snapshot::v1beta1::{VirtualMachineRestore, VirtualMachineSnapshot};

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
    /// `developerConfiguration.memoryOvercommit`, percent (upstream: 100): a VMI without a
    /// memory request requests its guest memory × 100 / this.
    pub memory_overcommit: u32,
}

/// Upstream's `memoryOvercommit` when the KubeVirt CR sets none: no overcommit.
pub const DEFAULT_MEMORY_OVERCOMMIT: u32 = 100;

impl Default for ClusterDefaults {
    fn default() -> Self {
        Self {
            machine_type: "q35".into(),
            cpu_model: "host-model".into(),
            architecture: "amd64".into(),
            default_network_interface: "bridge".into(),
            termination_grace_period_seconds: DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS,
            memory_overcommit: DEFAULT_MEMORY_OVERCOMMIT,
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
    object.apply_defaults(cluster);
}

/// The defaults of one kind, the single source [`crate::Kind::apply_defaults`] uses. Kinds upstream's
/// webhooks do not default keep the empty default.
pub(crate) trait Defaulting {
    /// Apply the create-time defaults.
    fn default_with(&mut self, _cluster: &ClusterDefaults) {}
}

impl Defaulting for VirtualMachine {
    fn default_with(&mut self, cluster: &ClusterDefaults) {
        vm::default_vm(self, cluster);
    }
}

impl Defaulting for VirtualMachineInstance {
    fn default_with(&mut self, cluster: &ClusterDefaults) {
        let key = object_key(&self.metadata);
        default_vmi_spec(&mut self.spec, &key, cluster);
    }
}

impl Defaulting for VirtualMachineInstanceReplicaSet {
    fn default_with(&mut self, _cluster: &ClusterDefaults) {
        self.spec.replicas.get_or_insert(1);
    }
}

impl Defaulting for DataVolume {
    fn default_with(&mut self, _cluster: &ClusterDefaults) {
        datavolume::default_dv_spec(&mut self.spec);
    }
}

impl Defaulting for VirtualMachineSnapshot {
    fn default_with(&mut self, _cluster: &ClusterDefaults) {
        snapshot::default_snapshot(self);
    }
}

impl Defaulting for VirtualMachineRestore {
    fn default_with(&mut self, _cluster: &ClusterDefaults) {
        snapshot::default_restore(self);
    }
}

macro_rules! no_defaults {
    ($($ty:ty),* $(,)?) => { $( impl Defaulting for $ty {} )* };
}

kinds_without_webhook_rules!(no_defaults);

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
