//! Disks, volumes, interfaces and networks by kind.

use super::InterfaceBinding;
use crate::core::v1::{
    CloudInitNoCloudSource, ContainerDiskSource, DataVolumeSource, Disk, DiskBus, DiskTarget,
    EmptyDiskSource, Interface, KernelBoot, KernelBootContainer, Network,
    PersistentVolumeClaimVolumeSource, PodNetwork, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

impl Disk {
    /// A disk on `bus` backed by the volume of the same name.
    pub fn on_bus(name: &str, bus: DiskBus) -> Self {
        Disk {
            name: name.into(),
            disk: Some(DiskTarget {
                bus: Some(bus),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A virtio disk backed by the volume of the same name.
    pub fn virtio(name: &str) -> Self {
        Self::on_bus(name, DiskBus::Virtio)
    }

    /// Boot from this disk first (`bootOrder`, 1 is first).
    pub fn boot_order(mut self, order: u64) -> Self {
        self.boot_order = Some(order);
        self
    }
}

impl Volume {
    fn named(name: &str) -> Self {
        Volume {
            name: name.into(),
            ..Default::default()
        }
    }

    /// A volume from a container image holding a disk image (`containerDisk`).
    pub fn container_disk(name: &str, image: &str) -> Self {
        Volume {
            container_disk: Some(ContainerDiskSource {
                image: image.into(),
                ..Default::default()
            }),
            ..Self::named(name)
        }
    }

    /// A blank, sparse disk of `capacity` (`emptyDisk`, a Kubernetes quantity such as `16Mi`),
    /// discarded when the VMI ends.
    pub fn empty_disk(name: &str, capacity: &str) -> Self {
        Volume {
            empty_disk: Some(EmptyDiskSource {
                capacity: Quantity(capacity.into()),
            }),
            ..Self::named(name)
        }
    }

    /// A cloud-init NoCloud data source with `user_data` (`cloudInitNoCloud.userData`).
    pub fn cloud_init_no_cloud(name: &str, user_data: &str) -> Self {
        Volume {
            cloud_init_no_cloud: Some(CloudInitNoCloudSource {
                user_data: Some(user_data.into()),
                ..Default::default()
            }),
            ..Self::named(name)
        }
    }

    /// A PersistentVolumeClaim of the VM's namespace (`persistentVolumeClaim.claimName`).
    pub fn persistent_volume_claim(name: &str, claim: &str) -> Self {
        Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.into(),
                ..Default::default()
            }),
            ..Self::named(name)
        }
    }

    /// A CDI DataVolume of the VM's namespace (`dataVolume.name`).
    pub fn data_volume(name: &str, data_volume: &str) -> Self {
        Volume {
            data_volume: Some(DataVolumeSource {
                name: data_volume.into(),
                ..Default::default()
            }),
            ..Self::named(name)
        }
    }
}

impl Interface {
    /// An interface bound by masquerade (NAT behind the pod's address), for a pod network.
    pub fn masquerade(name: &str) -> Self {
        Self::with_binding(name, InterfaceBinding::Masquerade)
    }

    /// An interface bridged to the network (the guest takes the pod's address).
    pub fn bridge(name: &str) -> Self {
        Self::with_binding(name, InterfaceBinding::Bridge)
    }
}

impl Network {
    /// The pod network (`pod: {}`).
    pub fn pod(name: &str) -> Self {
        Network {
            name: name.into(),
            pod: Some(PodNetwork::default()),
            ..Default::default()
        }
    }
}

impl KernelBoot {
    /// Boot the kernel at `kernel_path` inside the container `image` (`kernelBoot.container`).
    pub fn container(image: &str, kernel_path: &str) -> Self {
        KernelBoot {
            container: Some(KernelBootContainer {
                image: image.into(),
                kernel_path: Some(kernel_path.into()),
                ..Default::default()
            }),
            kernel_args: None,
        }
    }

    /// The kernel command line (`kernelArgs`).
    pub fn args(mut self, args: &str) -> Self {
        self.kernel_args = Some(args.into());
        self
    }

    /// The initrd at `path` in the same container (`container.initrdPath`).
    pub fn initrd(mut self, path: &str) -> Self {
        if let Some(c) = &mut self.container {
            c.initrd_path = Some(path.into());
        }
        self
    }
}
