//! MSI delivery through KVM: what virtio-pci devices' MSI-X messages become.

use std::sync::Arc;

use kvm_bindings::kvm_msi;
use kvm_ioctls::VmFd;

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
    fn send(&self, msg: MsiMessage) -> std::io::Result<()> {
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
