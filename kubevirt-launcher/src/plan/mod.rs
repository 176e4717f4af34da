//! A VMI spec turned into what the VMM needs: the launch plan.
//!
//! [`from_document`] is the launcher's entry: it applies the kubevirt-rs cluster defaults and
//! runs `kubevirt_api::validation` once, as the API server would, so a document is judged by the
//! same rules wherever it comes from. [`from_vmi`] then maps the defaulted, valid VMI onto the
//! VMM's own types and refuses only what kubevirt-rs cannot do yet: every such field is reported
//! with its path, all at once, before anything is started.

mod build;
mod supported;

pub use self::build::{from_document, from_vmi, vmi_of};
pub use self::supported::unsupported;

use kubevirt_api::core::v1::{CloudInitConfigDriveSource, CloudInitNoCloudSource};
use kubevirt_api::validation::FieldError;
pub use kubevirt_vmm::CpuTopology;
pub use kubevirt_vmm::virtio::block::{CacheMode, ErrorPolicy};
use std::time::Duration;

/// Direct kernel boot (upstream's `firmware.kernelBoot`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    /// The container image holding the kernel and initrd.
    pub image: String,
    /// Kernel path inside the image.
    pub kernel_path: Option<String>,
    /// Initrd path inside the image.
    pub initrd_path: Option<String>,
    /// Kernel command line.
    pub cmdline: String,
}

/// How the guest boots (upstream's `domain.firmware`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootPlan {
    /// Direct kernel boot (`firmware.kernelBoot`).
    Kernel(KernelBoot),
    /// Legacy BIOS firmware (SeaBIOS): `firmware.bootloader.bios`, the default.
    Bios,
    /// UEFI firmware (OVMF) without secure boot: `firmware.bootloader.efi` with
    /// `secureBoot: false`. Its variable store lives as long as the VMI.
    Efi,
}

/// Where a disk's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum DiskSource {
    /// A disk image inside an OCI image (copy-on-write overlay; the image is never modified).
    ContainerDisk {
        /// Image reference.
        image: String,
        /// Path of the disk inside the image, if not the default `/disk/*`.
        path: Option<String>,
    },
    /// A claim the node prepared (a file or block device).
    PersistentVolumeClaim {
        /// Claim name.
        claim: String,
        /// The claim's capacity (`status.volumeStatus[].persistentVolumeClaimInfo.capacity`),
        /// the size of the `disk.img` the launcher creates on a Filesystem claim without one.
        capacity: Option<u64>,
    },
    /// A DataVolume's claim.
    DataVolume {
        /// DataVolume name.
        name: String,
        /// As for a `PersistentVolumeClaim`.
        capacity: Option<u64>,
    },
    /// A sparse scratch disk that lives as long as the VMI.
    EmptyDisk {
        /// Size in bytes.
        capacity: u64,
    },
    /// The NoCloud `cidata` disk.
    CloudInitNoCloud(Box<CloudInitNoCloudSource>),
    /// The ConfigDrive `config-2` disk.
    CloudInitConfigDrive(Box<CloudInitConfigDriveSource>),
    /// A file on the host.
    HostDisk {
        /// Path on the host.
        path: String,
        /// `Disk` (must exist) or `DiskOrCreate`.
        create: bool,
        /// Size when created.
        capacity: Option<u64>,
    },
    /// A ConfigMap's data as a disk (an ISO image of its keys).
    ConfigMap {
        /// ConfigMap name.
        name: String,
        /// A missing ConfigMap is an empty disk rather than an error.
        optional: bool,
        /// The ISO's volume label (`volumeLabel`).
        volume_label: Option<String>,
    },
    /// A Secret's data as a disk (an ISO image of its keys).
    Secret {
        /// Secret name.
        name: String,
        /// A missing Secret is an empty disk rather than an error.
        optional: bool,
        /// The ISO's volume label (`volumeLabel`).
        volume_label: Option<String>,
    },
}

/// One guest disk.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskPlan {
    /// Disk (and volume) name.
    pub name: String,
    /// Its source.
    pub source: DiskSource,
    /// Read-only for the guest.
    pub readonly: bool,
    /// Serial the guest sees.
    pub serial: Option<String>,
    /// Host caching.
    pub cache: CacheMode,
    /// What a backend error does (`errorPolicy`; upstream's default `stop`: the VM pauses
    /// and the request runs again on unpause).
    pub error_policy: ErrorPolicy,
    /// Boot order (lower first). The plan lists disks in attach order: those with a boot order
    /// first, lowest first, then the others as the VMI lists them; firmware gets the same order
    /// as its `bootorder`.
    pub boot_order: Option<u64>,
}

/// How the guest is bound to the pod network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `masquerade: {}`: the guest at 10.0.2.2 behind NAT to the pod's address.
    Masquerade,
    /// `bridge: {}`: the pod's interface on a bridge with the guest's tap; the guest takes the
    /// pod's address (and MAC) by DHCP.
    Bridge,
}

impl Binding {
    /// The binding's name in the VMI (and in its status).
    pub fn name(self) -> &'static str {
        match self {
            Binding::Masquerade => "masquerade",
            Binding::Bridge => "bridge",
        }
    }
}

/// The pod network and its binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// Interface name.
    pub name: String,
    /// Masquerade or bridge.
    pub binding: Binding,
    /// Guest MAC address, if given (`macAddress`).
    pub mac: Option<[u8; 6]>,
    /// Ports forwarded to the guest (`(protocol, port)`); empty forwards all.
    pub ports: Vec<(String, u16)>,
}

/// Everything the launcher needs to start the VM.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchPlan {
    /// VMI name.
    pub name: String,
    /// VMI namespace.
    pub namespace: String,
    /// vCPU topology.
    pub cpu: CpuTopology,
    /// Guest memory in bytes.
    pub memory_bytes: u64,
    /// CPU features to hide from the guest (`cpu.features` with `policy: disable`).
    pub disabled_cpu_features: Vec<String>,
    /// SMBIOS system UUID (RFC 4122 byte order): `firmware.uuid`, else the VMI's uid.
    pub firmware_uuid: Option<[u8; 16]>,
    /// SMBIOS serial, if set.
    pub firmware_serial: Option<String>,
    /// How the guest boots.
    pub boot: BootPlan,
    /// Disks in spec order.
    pub disks: Vec<DiskPlan>,
    /// Pod network, if attached.
    pub network: Option<NetworkPlan>,
    /// A virtio-rng device.
    pub rng: bool,
    /// The serial console (upstream's `autoattachSerialConsole`, default on).
    pub serial_console: bool,
    /// Log the serial console to a file.
    pub log_serial_console: bool,
    /// Grace period for a graceful shutdown before the VM is stopped.
    pub grace_period: Duration,
}

impl LaunchPlan {
    /// The direct kernel boot, if the guest boots that way.
    pub fn kernel_boot(&self) -> Option<&KernelBoot> {
        match &self.boot {
            BootPlan::Kernel(k) => Some(k),
            BootPlan::Bios | BootPlan::Efi => None,
        }
    }

    /// The indices (in [`LaunchPlan::disks`]) of the disks with a `bootOrder`, first choice
    /// first: the firmware's boot order.
    pub fn boot_disks(&self) -> Vec<usize> {
        let mut order: Vec<(u64, usize)> = self
            .disks
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.boot_order.map(|o| (o, i)))
            .collect();
        order.sort();
        order.into_iter().map(|(_, i)| i).collect()
    }
}

/// Every reason a VMI cannot be launched, each naming its field: the validation errors of an
/// invalid document, or the fields kubevirt-rs cannot honour yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct PlanErrors(pub Vec<FieldError>);
