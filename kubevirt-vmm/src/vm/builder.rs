//! [`VmBuilder`]: the configuration and the embedder's extra devices a [`Vm`] is built from.

use std::sync::Arc;
use std::time::Instant;

use crate::bus::SharedDevice;
use crate::virtio::VirtioDevice;

use super::{Lifecycle, Vm, VmConfig, VmError};

/// Builds a [`Vm`], optionally with extra devices of the embedding program: port-I/O and MMIO
/// [`BusDevice`](crate::BusDevice)s and [`VirtioDevice`]s on PCI.
///
/// ```no_run
/// use std::sync::{Arc, Mutex};
/// use kubevirt_vmm::virtio::block::{Block, RawFile};
/// use kubevirt_vmm::{BootSource, BusDevice, KernelImage, LinuxBoot, Vm, VmConfig};
///
/// /// A port that reads as 0x2a.
/// struct Answer;
/// impl BusDevice for Answer {
///     fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
///         data.fill(0x2a);
///     }
///     fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {}
/// }
///
/// let boot = BootSource::Linux(LinuxBoot {
///     kernel: KernelImage::Path("target/demo-guest.elf".into()),
///     initrd: None,
///     cmdline: "console=ttyS0".into(),
/// });
/// let disk = RawFile::open("disk.img".as_ref(), false)?;
/// let vm = Vm::builder(VmConfig::new(1, 64 << 20, boot))
///     .pio_device(0x510, 1, Arc::new(Mutex::new(Answer)))
///     .virtio_device(Box::new(Block::new(Box::new(disk), "DISK-1")))
///     .build()?;
/// vm.start()?;
/// println!("{}", vm.wait());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct VmBuilder {
    pub(super) config: VmConfig,
    pub(super) lifecycle: Arc<Lifecycle>,
    pub(super) pio: Vec<(u64, u64, SharedDevice)>,
    pub(super) mmio: Vec<(u64, u64, SharedDevice)>,
    pub(super) virtio: Vec<Box<dyn VirtioDevice>>,
    pub(super) created_at: Instant,
}

impl VmBuilder {
    /// Starts building from `config`. The VM's creation time (see [`Vm::created_at`]) is now.
    pub fn new(config: VmConfig) -> Self {
        let lifecycle = Arc::new(Lifecycle::new(usize::from(config.vcpus)));
        VmBuilder {
            config,
            lifecycle,
            pio: Vec::new(),
            mmio: Vec::new(),
            virtio: Vec::new(),
            created_at: Instant::now(),
        }
    }

    /// The VM's lifecycle, for devices that end the VM (pass it as their
    /// [`ExitRequester`](super::ExitRequester)).
    pub fn exit_requester(&self) -> Arc<Lifecycle> {
        self.lifecycle.clone()
    }

    /// Adds a device on ports `[base, base + len)`.
    pub fn pio_device(mut self, base: u16, len: u16, device: SharedDevice) -> Self {
        self.pio.push((u64::from(base), u64::from(len), device));
        self
    }

    /// Adds a device at guest-physical `[base, base + len)` (inside the MMIO hole, e.g. in
    /// `crate::arch::layout::MMIO_DEVICES_START`'s window).
    pub fn mmio_device(mut self, base: u64, len: u64, device: SharedDevice) -> Self {
        self.mmio.push((base, len, device));
        self
    }

    /// Adds a virtio device on PCI bus 0 (slots in the order added, after the host bridge at
    /// slot 0). With any virtio device the VM gets the PCI root complex: ports 0xCF8-0xCFF,
    /// ECAM at `crate::pci::PCI_MMCONFIG_START` and BARs in
    /// `crate::pci::PCI_MMIO_WINDOW_START`'s window; queue notifications are KVM ioeventfds.
    /// Devices: [`crate::virtio::block::Block`], [`crate::virtio::net::Net`],
    /// [`crate::virtio::rng::Rng`], [`crate::virtio::console::Console`], or the embedder's own.
    pub fn virtio_device(mut self, mut device: Box<dyn VirtioDevice>) -> Self {
        device.attach_lifecycle(self.lifecycle.clone());
        self.virtio.push(device);
        self
    }

    /// Creates the VM: KVM objects, RAM, devices, boot image and vCPUs. Nothing runs yet.
    ///
    /// # Errors
    /// [`VmError`] naming the step that failed: `/dev/kvm` cannot be opened or lacks a
    /// capability ([`VmError::OpenKvm`], [`VmError::MissingCapability`]), the vCPU count or
    /// topology is not possible, RAM cannot be mapped ([`VmError::Memory`]), the kernel or
    /// payload does not load ([`VmError::Boot`]), the console cannot be opened
    /// ([`VmError::Console`]), devices overlap ([`VmError::Bus`]) or a virtio device does not
    /// fit on PCI ([`VmError::Pci`], [`VmError::VirtioPci`]).
    pub fn build(self) -> Result<Vm, VmError> {
        self.build_from(None)
    }

    /// The configuration the VM will be built with.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }
}
