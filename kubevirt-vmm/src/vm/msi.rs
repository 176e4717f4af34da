//! MSI delivery through KVM: what virtio-pci devices' MSI-X messages become.
//!
//! [`IrqfdMsiSink`] (what [`crate::Vm`] gives each virtio-pci device) routes each vector
//! through its own irqfd: when the driver unmasks or reprograms a vector, the sink installs a
//! GSI route to the vector's message ([`super::gsi_routing`]) and registers an eventfd on that
//! GSI with `KVM_IRQFD`; raising the vector is then one eventfd write, with no ioctl.
//! [`KvmMsiSink`] sends each message with `KVM_SIGNAL_MSI` instead (one ioctl per interrupt).

use std::sync::{Arc, Mutex, PoisonError};

use kvm_bindings::kvm_msi;
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use super::gsi_routing::GsiRouter;
use crate::pci::msix::{MsiMessage, MsiSink};

/// Sends each message with `KVM_SIGNAL_MSI`: the in-kernel LAPIC delivers it like a device's
/// memory write to the MSI window.
#[derive(Debug)]
pub struct KvmMsiSink {
    vm: Arc<VmFd>,
}

impl KvmMsiSink {
    /// A sink for the VM behind `vm`.
    pub fn new(vm: Arc<VmFd>) -> Self {
        KvmMsiSink { vm }
    }
}

impl MsiSink for KvmMsiSink {
    fn send(&self, _vector: u16, msg: MsiMessage) -> std::io::Result<()> {
        let msi = kvm_msi {
            address_lo: msg.address as u32,
            address_hi: (msg.address >> 32) as u32,
            data: msg.data,
            ..Default::default()
        };
        self.vm
            .signal_msi(msi)
            .map(|_| ())
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    }
}

/// One vector's route: its GSI, the message routed there, and the irqfd.
#[derive(Debug)]
struct VectorRoute {
    gsi: u32,
    msg: MsiMessage,
    irqfd: EventFd,
}

/// Raises each MSI-X vector by writing its irqfd; routes are installed lazily, on the first
/// unmask of a vector, and updated when the driver rewrites the vector's address or data.
/// Masking needs nothing here: the table keeps a masked vector's interrupt pending instead of
/// calling [`MsiSink::send`].
#[derive(Debug)]
pub struct IrqfdMsiSink {
    router: Arc<GsiRouter>,
    vectors: Mutex<Vec<Option<VectorRoute>>>,
}

fn io_error(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}

impl IrqfdMsiSink {
    /// A sink for a function with `vectors` MSI-X vectors, routing through `router`.
    pub fn new(router: Arc<GsiRouter>, vectors: u16) -> Self {
        IrqfdMsiSink {
            router,
            vectors: Mutex::new((0..vectors).map(|_| None).collect()),
        }
    }

    /// The GSI `vector` is routed on, once the driver unmasked it.
    pub fn gsi(&self, vector: u16) -> Option<u32> {
        self.lock()
            .get(usize::from(vector))?
            .as_ref()
            .map(|r| r.gsi)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<VectorRoute>>> {
        self.vectors.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs or updates `vector`'s route under the held lock.
    fn ensure_route<'a>(
        &self,
        vectors: &'a mut [Option<VectorRoute>],
        vector: u16,
        msg: MsiMessage,
    ) -> std::io::Result<&'a VectorRoute> {
        let slot = vectors.get_mut(usize::from(vector)).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("MSI-X vector {vector} is beyond the function's table"),
            )
        })?;
        match slot {
            Some(route) => {
                if route.msg != msg {
                    self.router.update_msi(route.gsi, msg).map_err(io_error)?;
                    route.msg = msg;
                }
            }
            None => {
                let irqfd = EventFd::new(libc::EFD_NONBLOCK)?;
                let gsi = self.router.add_msi(msg).map_err(io_error)?;
                if let Err(e) = self.router.vm_fd().register_irqfd(&irqfd, gsi) {
                    let _ = self.router.remove_msi(gsi);
                    return Err(std::io::Error::from_raw_os_error(e.errno()));
                }
                *slot = Some(VectorRoute { gsi, msg, irqfd });
            }
        }
        slot.as_ref()
            .ok_or_else(|| std::io::Error::other("MSI-X route vanished while being installed"))
    }
}

impl MsiSink for IrqfdMsiSink {
    fn send(&self, vector: u16, msg: MsiMessage) -> std::io::Result<()> {
        let mut vectors = self.lock();
        self.ensure_route(&mut vectors, vector, msg)?.irqfd.write(1)
    }

    fn route(&self, vector: u16, msg: MsiMessage) -> std::io::Result<()> {
        let mut vectors = self.lock();
        self.ensure_route(&mut vectors, vector, msg).map(|_| ())
    }
}

impl Drop for IrqfdMsiSink {
    fn drop(&mut self) {
        let vectors = std::mem::take(&mut *self.lock());
        for route in vectors.into_iter().flatten() {
            let _ = self
                .router
                .vm_fd()
                .unregister_irqfd(&route.irqfd, route.gsi);
            let _ = self.router.remove_msi(route.gsi);
        }
    }
}
