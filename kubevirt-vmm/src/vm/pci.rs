//! The PCI root complex of a VM with virtio devices: transports, ioeventfds, bus ranges.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use crate::memory::GuestMemoryMmap;

use super::gsi_routing::GsiRouter;
use super::{VmError, msi, vm_ioctl};
use crate::bus::Bus;
use crate::pci::{
    CONFIG_IO_PORT, CONFIG_IO_SPAN, PCI_MMCONFIG_SIZE, PCI_MMCONFIG_START,
    PCI_MMIO_HIGH_WINDOW_SIZE, PCI_MMIO_HIGH_WINDOW_START, PCI_MMIO_WINDOW_SIZE,
    PCI_MMIO_WINDOW_START, PciBarWindow, PciConfigIo, PciConfigMmio, PciIoWindow, PciRootBuilder,
};
use crate::virtio::VirtioDevice;
use crate::virtio::pci::{IoEventRegistrar, VirtioPciDevice};
use vmm_sys_util::eventfd::EventFd;

/// Where each virtio device went: its slot on bus 0 and its virtio device type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PlacedDevice {
    pub slot: u8,
    pub device_type: u32,
}

/// Puts `devices` on a new PCI bus 0 (after the chipset's functions), registers their queue
/// notifications as ioeventfds and the root complex's ranges on the buses. MSI-X vectors raise irqfds routed by `router`.
pub(super) fn add_pci(
    vm_fd: &Arc<VmFd>,
    router: &Arc<GsiRouter>,
    memory: &GuestMemoryMmap,
    devices: Vec<Box<dyn VirtioDevice>>,
    pio_bus: &mut Bus,
    mmio_bus: &mut Bus,
) -> Result<(Vec<Arc<AtomicU64>>, Vec<PlacedDevice>), VmError> {
    let mut counters = Vec::new();
    let mut placed = Vec::new();
    let ioevents: Arc<dyn IoEventRegistrar> = Arc::new(KvmIoEvents {
        vm_fd: vm_fd.clone(),
        windows: [
            PCI_MMIO_WINDOW_START..PCI_MMIO_WINDOW_START + PCI_MMIO_WINDOW_SIZE,
            PCI_MMIO_HIGH_WINDOW_START..PCI_MMIO_HIGH_WINDOW_START + PCI_MMIO_HIGH_WINDOW_SIZE,
        ],
    });
    let mut pci = PciRootBuilder::new(PCI_MMIO_WINDOW_START, PCI_MMIO_WINDOW_SIZE);
    for device in devices {
        let device_type = device.device_type();
        let device = VirtioPciDevice::new(device, memory.clone())?;
        let sink = Arc::new(msi::IrqfdMsiSink::new(
            router.clone(),
            device.msix_vectors(),
        ));
        let device = device.with_msi_sink(sink);
        let device = Arc::new(Mutex::new(device));
        let slot = pci.add(device.clone())?;
        placed.push(PlacedDevice { slot, device_type });
        let mut device = device.lock().unwrap_or_else(PoisonError::into_inner);
        counters.push(device.userspace_notifies());
        device.attach_ioevents(ioevents.clone()).map_err(|e| {
            vm_ioctl("KVM_IOEVENTFD (virtio queue notify)")(kvm_ioctls::Error::new(
                e.raw_os_error().unwrap_or(libc::EINVAL),
            ))
        })?;
    }
    let root = pci.build();
    // Port blocks the guest places (the PIIX4 PM block) answer wherever no fixed device is.
    pio_bus.set_fallback(Arc::new(Mutex::new(PciIoWindow::new(root.clone()))));
    pio_bus.insert(
        Arc::new(Mutex::new(PciConfigIo::new(root.clone()))),
        u64::from(CONFIG_IO_PORT),
        CONFIG_IO_SPAN,
    )?;
    mmio_bus.insert(
        Arc::new(Mutex::new(PciConfigMmio::new(root.clone()))),
        PCI_MMCONFIG_START,
        PCI_MMCONFIG_SIZE,
    )?;
    mmio_bus.insert(
        Arc::new(Mutex::new(PciBarWindow::new(root.clone()))),
        PCI_MMIO_WINDOW_START,
        PCI_MMIO_WINDOW_SIZE,
    )?;
    mmio_bus.insert(
        Arc::new(Mutex::new(PciBarWindow::new(root))),
        PCI_MMIO_HIGH_WINDOW_START,
        PCI_MMIO_HIGH_WINDOW_SIZE,
    )?;
    Ok((counters, placed))
}

/// Queue notify addresses as KVM ioeventfds.
#[derive(Debug)]
struct KvmIoEvents {
    vm_fd: Arc<VmFd>,
    windows: [std::ops::Range<u64>; 2],
}

impl IoEventRegistrar for KvmIoEvents {
    fn accepts(&self, base: u64) -> bool {
        self.windows.iter().any(|w| w.contains(&base))
    }

    fn register(&self, addr: u64, event: &EventFd) -> std::io::Result<()> {
        self.vm_fd
            .register_ioevent(event, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, addr: u64, event: &EventFd) -> std::io::Result<()> {
        self.vm_fd
            .unregister_ioevent(event, &IoEventAddress::Mmio(addr), NoDatamatch)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}
