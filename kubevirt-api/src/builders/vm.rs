//! VirtualMachine and VirtualMachineInstance constructors, and the spec setters forwarded to them.

use crate::core::v1::{
    Disk, Interface, KernelBoot, Network, RunStrategy, VirtualMachine, VirtualMachineInstance,
    VirtualMachineInstanceSpec, VirtualMachineInstanceTemplateSpec, VirtualMachineSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The root disk's (and its volume's) name in [`VirtualMachine::from_container_disk`].
pub const ROOT_DISK: &str = "rootdisk";

/// Forward the spec setters to a type that holds a spec (`$spec` gives `&mut` access).
macro_rules! forward_spec_setters {
    ($ty:ty, $spec:ident) => {
        impl $ty {
            /// See [`VirtualMachineInstanceSpec::memory`].
            pub fn memory(self, guest: &str) -> Self {
                self.edit_spec(|s| s.memory(guest))
            }
            /// See [`VirtualMachineInstanceSpec::cores`].
            pub fn cores(self, cores: u32) -> Self {
                self.edit_spec(|s| s.cores(cores))
            }
            /// See [`VirtualMachineInstanceSpec::request`].
            pub fn request(self, resource: &str, quantity: &str) -> Self {
                self.edit_spec(|s| s.request(resource, quantity))
            }
            /// See [`VirtualMachineInstanceSpec::limit`].
            pub fn limit(self, resource: &str, quantity: &str) -> Self {
                self.edit_spec(|s| s.limit(resource, quantity))
            }
            /// See [`VirtualMachineInstanceSpec::disk`].
            pub fn disk(self, disk: Disk, volume: Volume) -> Self {
                self.edit_spec(|s| s.disk(disk, volume))
            }
            /// See [`VirtualMachineInstanceSpec::cloud_init_user_data`].
            pub fn cloud_init_user_data(self, user_data: &str) -> Self {
                self.edit_spec(|s| s.cloud_init_user_data(user_data))
            }
            /// See [`VirtualMachineInstanceSpec::network`].
            pub fn network(self, interface: Interface, network: Network) -> Self {
                self.edit_spec(|s| s.network(interface, network))
            }
            /// See [`VirtualMachineInstanceSpec::pod_network_masquerade`].
            pub fn pod_network_masquerade(self) -> Self {
                self.edit_spec(|s| s.pod_network_masquerade())
            }
            /// See [`VirtualMachineInstanceSpec::no_pod_interface`].
            pub fn no_pod_interface(self) -> Self {
                self.edit_spec(|s| s.no_pod_interface())
            }
            /// See [`VirtualMachineInstanceSpec::rng`].
            pub fn rng(self) -> Self {
                self.edit_spec(|s| s.rng())
            }
            /// See [`VirtualMachineInstanceSpec::kernel_boot`].
            pub fn kernel_boot(self, boot: KernelBoot) -> Self {
                self.edit_spec(|s| s.kernel_boot(boot))
            }
            /// See [`VirtualMachineInstanceSpec::termination_grace_period`].
            pub fn termination_grace_period(self, seconds: i64) -> Self {
                self.edit_spec(|s| s.termination_grace_period(seconds))
            }

            /// Apply a spec setter chain: `vm.edit_spec(|s| s.memory("1Gi").rng())`.
            pub fn edit_spec(
                mut self,
                f: impl FnOnce(VirtualMachineInstanceSpec) -> VirtualMachineInstanceSpec,
            ) -> Self {
                let spec = self.$spec();
                *spec = f(std::mem::take(spec));
                self
            }
        }
    };
}

forward_spec_setters!(VirtualMachine, template_spec_mut);
forward_spec_setters!(VirtualMachineInstance, spec_mut);

fn labelled(meta: &mut ObjectMeta, key: &str, value: &str) {
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
}

impl VirtualMachine {
    /// A VM named `name` with an empty template (no run strategy: the defaults make it `Halted`).
    pub fn named(name: &str) -> Self {
        VirtualMachine::new(
            name,
            VirtualMachineSpec {
                template: VirtualMachineInstanceTemplateSpec {
                    metadata: None,
                    spec: Some(VirtualMachineInstanceSpec::default()),
                },
                ..Default::default()
            },
        )
    }

    /// A VM booting the disk image in container `image` (virtio disk and volume [`ROOT_DISK`]).
    pub fn from_container_disk(name: &str, image: &str) -> Self {
        Self::named(name).disk(
            Disk::virtio(ROOT_DISK),
            Volume::container_disk(ROOT_DISK, image),
        )
    }

    /// The namespace (`metadata.namespace`).
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.into());
        self
    }

    /// A label on the VM and on the VMIs it creates (`metadata.labels` and the template's).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        labelled(&mut self.metadata, key, value);
        labelled(
            self.spec
                .template
                .metadata
                .get_or_insert_with(ObjectMeta::default),
            key,
            value,
        );
        self
    }

    /// The run strategy (`spec.runStrategy`).
    pub fn run_strategy(mut self, strategy: RunStrategy) -> Self {
        self.spec.run_strategy = Some(strategy);
        self
    }

    /// The template's VMI spec, created empty if the template has none.
    pub fn template_spec_mut(&mut self) -> &mut VirtualMachineInstanceSpec {
        self.spec.template.spec.get_or_insert_with(Default::default)
    }

    /// The template's VMI spec (an empty one if the template has none).
    pub fn template_spec(&self) -> std::borrow::Cow<'_, VirtualMachineInstanceSpec> {
        match &self.spec.template.spec {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(Default::default()),
        }
    }
}

impl VirtualMachineInstance {
    /// A VMI named `name` with an empty spec.
    pub fn named(name: &str) -> Self {
        VirtualMachineInstance::new(name, VirtualMachineInstanceSpec::default())
    }

    /// A VMI booting the disk image in container `image` (virtio disk and volume [`ROOT_DISK`]).
    pub fn from_container_disk(name: &str, image: &str) -> Self {
        Self::named(name).disk(
            Disk::virtio(ROOT_DISK),
            Volume::container_disk(ROOT_DISK, image),
        )
    }

    /// The namespace (`metadata.namespace`).
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.into());
        self
    }

    /// A label (`metadata.labels`).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        labelled(&mut self.metadata, key, value);
        self
    }

    fn spec_mut(&mut self) -> &mut VirtualMachineInstanceSpec {
        &mut self.spec
    }
}
