//! The PCI root complex of a VM with virtio devices: transports, ioeventfds, bus ranges.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vm_memory::GuestMemoryMmap;

use super::gsi_routing::GsiRouter;
use super::{VmError, msi, vm_ioctl};
use crate::bus::Bus;
use crate::pci::{
    CONFIG_IO_PORT, CONFIG_IO_SPAN, PCI_MMCONFIG_SIZE, PCI_MMCONFIG_START, PCI_MMIO_WINDOW_SIZE,
    PCI_MMIO_WINDOW_START, PciBarWindow, PciConfigIo, PciConfigMmio, PciRootBuilder,
};
use crate::virtio::VirtioDevice;
use crate::virtio::pci::{IoEventRegistrar, VirtioPciDevice};
use vmm_sys_util::eventfd::EventFd;

/// Puts `devices` on a new PCI bus 0, registers their queue notifications as ioeventfds and
/// the root complex's ranges on the buses. MSI-X vectors raise irqfds routed by `router`.
pub(super) fn add_pci(
    vm_fd: &Arc<VmFd>,
    router: &Arc<GsiRouter>,
    memory: &GuestMemoryMmap,
    devices: Vec<Box<dyn VirtioDevice>>,
    pio_bus: &mut Bus,
    mmio_bus: &mut Bus,
) -> Result<Vec<Arc<AtomicU64>>, VmError> {
    let mut counters = Vec::new();
    let ioevents: Arc<dyn IoEventRegistrar> = Arc::new(KvmIoEvents {
        vm_fd: vm_fd.clone(),
        window: PCI_MMIO_WINDOW_START..PCI_MMIO_WINDOW_START + PCI_MMIO_WINDOW_SIZE,
    });
    let mut pci = PciRootBuilder::new(PCI_MMIO_WINDOW_START, PCI_MMIO_WINDOW_SIZE);
    for device in devices {
        let device = VirtioPciDevice::new(device, memory.clone())?;
        let sink = Arc::new(msi::IrqfdMsiSink::new(
            router.clone(),
            device.msix_vectors(),
        ));
        let device = device.with_msi_sink(sink);
        let device = Arc::new(Mutex::new(device));
        pci.add(device.clone())?;
        let mut device = device.lock().unwrap_or_else(PoisonError::into_inner);
        counters.push(device.userspace_notifies());
        device.attach_ioevents(ioevents.clone()).map_err(|e| {
            vm_ioctl("KVM_IOEVENTFD (virtio queue notify)")(kvm_ioctls::Error::new(
                e.raw_os_error().unwrap_or(libc::EINVAL),
            ))
        })?;
    }
    let root = pci.build();
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
        Arc::new(Mutex::new(PciBarWindow::new(root))),
        PCI_MMIO_WINDOW_START,
        PCI_MMIO_WINDOW_SIZE,
    )?;
    Ok(counters)
}

/// Queue notify addresses as KVM ioeventfds.
#[derive(Debug)]
struct KvmIoEvents {
    vm_fd: Arc<VmFd>,
    window: std::ops::Range<u64>,
}

impl IoEventRegistrar for KvmIoEvents {
    fn accepts(&self, base: u64) -> bool {
        self.window.contains(&base)
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
