//! Chainable setters on a VMI spec (a VM's template or a VMI's own spec).

use crate::core::v1::{
    CPU, Disk, Firmware, Interface, KernelBoot, Memory, Network, ResourceRequirements, Rng,
    VirtualMachineInstanceSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

impl VirtualMachineInstanceSpec {
    /// Guest memory (`domain.memory.guest`, a Kubernetes quantity such as `1Gi`).
    pub fn memory(mut self, guest: &str) -> Self {
        self.domain.memory.get_or_insert_with(Memory::default).guest = Some(Quantity(guest.into()));
        self
    }

    /// vCPU cores (`domain.cpu.cores`).
    pub fn cores(mut self, cores: u32) -> Self {
        self.domain.cpu.get_or_insert_with(CPU::default).cores = Some(cores);
        self
    }

    /// A resource request of the VMI's pod (`domain.resources.requests`, e.g. `("memory", "1Gi")`).
    pub fn request(mut self, resource: &str, quantity: &str) -> Self {
        self.domain
            .resources
            .get_or_insert_with(ResourceRequirements::default)
            .requests
            .get_or_insert_with(Default::default)
            .insert(resource.into(), Quantity(quantity.into()));
        self
    }

    /// A resource limit of the VMI's pod (`domain.resources.limits`).
    pub fn limit(mut self, resource: &str, quantity: &str) -> Self {
        self.domain
            .resources
            .get_or_insert_with(ResourceRequirements::default)
            .limits
            .get_or_insert_with(Default::default)
            .insert(resource.into(), Quantity(quantity.into()));
        self
    }

    /// A disk and the volume behind it (their names should match).
    pub fn disk(mut self, disk: Disk, volume: Volume) -> Self {
        self.domain
            .devices
            .disks
            .get_or_insert_with(Vec::new)
            .push(disk);
        self.volumes.get_or_insert_with(Vec::new).push(volume);
        self
    }

    /// A virtio disk `cloudinit` with cloud-init NoCloud `user_data` (`#cloud-config ...`).
    pub fn cloud_init_user_data(self, user_data: &str) -> Self {
        self.disk(
            Disk::virtio("cloudinit"),
            Volume::cloud_init_no_cloud("cloudinit", user_data),
        )
    }

    /// A network and the interface attached to it (their names should match).
    pub fn network(mut self, interface: Interface, network: Network) -> Self {
        self.domain
            .devices
            .interfaces
            .get_or_insert_with(Vec::new)
            .push(interface);
        self.networks.get_or_insert_with(Vec::new).push(network);
        self
    }

    /// The pod network, masqueraded, as interface `default`.
    pub fn pod_network_masquerade(self) -> Self {
        self.network(Interface::masquerade("default"), Network::pod("default"))
    }

    /// No interface on the pod network unless one is listed (`autoattachPodInterface: false`).
    pub fn no_pod_interface(mut self) -> Self {
        self.domain.devices.autoattach_pod_interface = Some(false);
        self
    }

    /// A virtio RNG device (`devices.rng`).
    pub fn rng(mut self) -> Self {
        self.domain.devices.rng = Some(Rng {});
        self
    }

    /// Boot a kernel directly (`domain.firmware.kernelBoot`).
    pub fn kernel_boot(mut self, boot: KernelBoot) -> Self {
        self.domain
            .firmware
            .get_or_insert_with(Firmware::default)
            .kernel_boot = Some(boot);
        self
    }

    /// Seconds the guest gets to shut down (`terminationGracePeriodSeconds`).
    pub fn termination_grace_period(mut self, seconds: i64) -> Self {
        self.termination_grace_period_seconds = Some(seconds);
        self
    }
}
