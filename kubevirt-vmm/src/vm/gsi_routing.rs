//! The VM's GSI routing table (`KVM_SET_GSI_ROUTING`): where each global system interrupt an
//! irqfd raises goes.
//!
//! KVM replaces the whole table on every `KVM_SET_GSI_ROUTING`, so the VM keeps one
//! [`GsiRoutingTable`] and sends all of it each time. It starts with the routes KVM itself
//! installs with `KVM_CREATE_IRQCHIP`: GSIs 0-15 to the PIC pins and 0-23 to the IOAPIC pins
//! (COM1's GSI 4 and the ACPI GED's GSI 5 are irqfds on those). MSI routes — one per MSI-X
//! vector a driver unmasked — take GSIs from [`FIRST_MSI_GSI`] up.

use std::sync::{Arc, Mutex, PoisonError};

use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_IRQ_ROUTES, KvmIrqRouting, kvm_irq_routing_entry,
};
use kvm_ioctls::VmFd;

use crate::pci::msix::MsiMessage;

/// IOAPIC pins, hence GSIs with a default irqchip route.
pub const IOAPIC_PINS: u32 = 24;
/// The first GSI handed to MSI routes.
pub const FIRST_MSI_GSI: u32 = IOAPIC_PINS;

/// Errors changing the routing table.
#[derive(Debug, thiserror::Error)]
pub enum GsiRoutingError {
    /// Every GSI KVM accepts is taken.
    #[error(
        "no free GSI for another MSI route: KVM allows {KVM_MAX_IRQ_ROUTES} routes and they are all in use (too many MSI-X vectors unmasked)"
    )]
    Exhausted,
    /// The GSI has no MSI route (a bookkeeping bug in the caller).
    #[error("GSI {0} is not an allocated MSI route")]
    NotAllocated(u32),
    /// Building the ioctl's argument failed.
    #[error("building the KVM_SET_GSI_ROUTING table of {entries} entries: {source}")]
    Build {
        /// Entries in the table.
        entries: usize,
        /// The error.
        #[source]
        source: vmm_sys_util::fam::Error,
    },
    /// `KVM_SET_GSI_ROUTING` failed.
    #[error("KVM_SET_GSI_ROUTING with {entries} entries failed: {source}")]
    Ioctl {
        /// Entries in the table.
        entries: usize,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// The routes of one VM, as plain data (no KVM): default irqchip routes plus MSI routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GsiRoutingTable {
    /// MSI routes by GSI; `None`: free for reuse. Index 0 is [`FIRST_MSI_GSI`].
    msi: Vec<Option<MsiMessage>>,
}

fn irqchip_entry(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = irqchip;
    e.u.irqchip.pin = pin;
    e
}

fn msi_entry(gsi: u32, msg: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = msg.address as u32;
    e.u.msi.address_hi = (msg.address >> 32) as u32;
    e.u.msi.data = msg.data;
    e
}

impl GsiRoutingTable {
    /// Only the default irqchip routes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a free GSI for an MSI route to `msg` (the lowest free one).
    pub fn allocate_msi(&mut self, msg: MsiMessage) -> Result<u32, GsiRoutingError> {
        let index = match self.msi.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                // KVM caps both the entry count and the GSI numbers at KVM_MAX_IRQ_ROUTES; the
                // count binds first (the 40 default entries cover only 24 GSIs).
                if self.entry_count() >= KVM_MAX_IRQ_ROUTES {
                    return Err(GsiRoutingError::Exhausted);
                }
                self.msi.push(None);
                self.msi.len() - 1
            }
        };
        self.msi[index] = Some(msg);
        Ok(FIRST_MSI_GSI + index as u32)
    }

    fn slot(&mut self, gsi: u32) -> Result<&mut Option<MsiMessage>, GsiRoutingError> {
        gsi.checked_sub(FIRST_MSI_GSI)
            .and_then(|i| self.msi.get_mut(i as usize))
            .filter(|s| s.is_some())
            .ok_or(GsiRoutingError::NotAllocated(gsi))
    }

    /// Points the MSI route at `gsi` to `msg`; returns whether it changed.
    pub fn set_msi(&mut self, gsi: u32, msg: MsiMessage) -> Result<bool, GsiRoutingError> {
        let slot = self.slot(gsi)?;
        let changed = *slot != Some(msg);
        *slot = Some(msg);
        Ok(changed)
    }

    /// Frees the MSI route at `gsi`.
    pub fn free_msi(&mut self, gsi: u32) -> Result<(), GsiRoutingError> {
        *self.slot(gsi)? = None;
        while self.msi.last() == Some(&None) {
            self.msi.pop();
        }
        Ok(())
    }

    /// The MSI route at `gsi`, if allocated.
    pub fn msi(&self, gsi: u32) -> Option<MsiMessage> {
        let i = gsi.checked_sub(FIRST_MSI_GSI)?;
        self.msi.get(i as usize).copied().flatten()
    }

    /// Every MSI route: (GSI, message), by GSI.
    pub fn msi_routes(&self) -> Vec<(u32, MsiMessage)> {
        self.msi
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.map(|m| (FIRST_MSI_GSI + i as u32, m)))
            .collect()
    }

    fn entry_count(&self) -> usize {
        16 + IOAPIC_PINS as usize + self.msi.iter().flatten().count()
    }

    /// Every route, as `KVM_SET_GSI_ROUTING` wants them: the default PIC and IOAPIC routes
    /// first, then the MSI routes by GSI.
    pub fn entries(&self) -> Vec<kvm_irq_routing_entry> {
        let mut out = Vec::with_capacity(self.entry_count());
        for gsi in 0..16 {
            let (chip, pin) = if gsi < 8 {
                (KVM_IRQCHIP_PIC_MASTER, gsi)
            } else {
                (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
            };
            out.push(irqchip_entry(gsi, chip, pin));
        }
        for gsi in 0..IOAPIC_PINS {
            out.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        }
        for (i, msg) in self.msi.iter().enumerate() {
            if let Some(msg) = msg {
                out.push(msi_entry(FIRST_MSI_GSI + i as u32, *msg));
            }
        }
        out
    }

    /// The table as the ioctl's argument.
    pub fn to_kvm(&self) -> Result<KvmIrqRouting, GsiRoutingError> {
        let entries = self.entries();
        KvmIrqRouting::from_entries(&entries).map_err(|source| GsiRoutingError::Build {
            entries: entries.len(),
            source,
        })
    }
}

/// The routing table of a running VM: every change goes to KVM at once.
#[derive(Debug)]
pub struct GsiRouter {
    vm: Arc<VmFd>,
    table: Mutex<GsiRoutingTable>,
}

impl GsiRouter {
    /// The router of the VM behind `vm` (which has an in-kernel irqchip); nothing is sent to
    /// KVM until the first MSI route.
    pub fn new(vm: Arc<VmFd>) -> Self {
        GsiRouter {
            vm,
            table: Mutex::new(GsiRoutingTable::new()),
        }
    }

    /// The VM fd, to register irqfds on the GSIs handed out.
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm
    }

    fn commit(&self, table: &GsiRoutingTable) -> Result<(), GsiRoutingError> {
        let routing = table.to_kvm()?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|source| GsiRoutingError::Ioctl {
                entries: routing.as_slice().len(),
                source,
            })
    }

    /// Allocates a GSI routed to `msg` and installs the table.
    pub fn add_msi(&self, msg: MsiMessage) -> Result<u32, GsiRoutingError> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let gsi = table.allocate_msi(msg)?;
        if let Err(e) = self.commit(&table) {
            let _ = table.free_msi(gsi);
            return Err(e);
        }
        Ok(gsi)
    }

    /// Re-points `gsi` at `msg`; the ioctl runs only if the route changed.
    pub fn update_msi(&self, gsi: u32, msg: MsiMessage) -> Result<(), GsiRoutingError> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let old = table.msi(gsi);
        if table.set_msi(gsi, msg)?
            && let Err(e) = self.commit(&table)
        {
            if let Some(old) = old {
                let _ = table.set_msi(gsi, old);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Removes the route at `gsi` and installs the table.
    pub fn remove_msi(&self, gsi: u32) -> Result<(), GsiRoutingError> {
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.free_msi(gsi)?;
        self.commit(&table)
    }

    /// A copy of the table, for inspection.
    pub fn table(&self) -> GsiRoutingTable {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: u32) -> MsiMessage {
        MsiMessage {
            address: 0xfee0_0000,
            data: v,
        }
    }

    #[test]
    fn defaults_keep_pic_and_ioapic_routes() {
        let t = GsiRoutingTable::new();
        let e = t.entries();
        assert_eq!(e.len(), 40);
        assert!(e.iter().all(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP));
        let ged: Vec<_> = e
            .iter()
            .filter(|e| e.gsi == 5)
            .map(|e| {
                // SAFETY: irqchip entries hold the `irqchip` union member.
                let chip = unsafe { e.u.irqchip };
                (chip.irqchip, chip.pin)
            })
            .collect();
        assert_eq!(
            ged,
            vec![(KVM_IRQCHIP_PIC_MASTER, 5), (KVM_IRQCHIP_IOAPIC, 5)]
        );
        // SAFETY: as above.
        let slave = unsafe { e[10].u.irqchip };
        assert_eq!((e[10].gsi, slave.irqchip, slave.pin), (10, 1, 2));
        assert_eq!(e.iter().filter(|e| e.gsi == 23).count(), 1);
    }

    #[test]
    fn msi_routes_allocate_update_free_and_reuse_gsis() {
        let mut t = GsiRoutingTable::new();
        assert_eq!(t.allocate_msi(msg(0x41)).unwrap(), 24);
        assert_eq!(t.allocate_msi(msg(0x42)).unwrap(), 25);
        assert_eq!(t.allocate_msi(msg(0x43)).unwrap(), 26);
        assert!(
            !t.set_msi(25, msg(0x42)).unwrap(),
            "same message: no change"
        );
        assert!(t.set_msi(25, msg(0x52)).unwrap());
        let e = t.entries();
        assert_eq!(e.len(), 43);
        let last = e[41];
        assert_eq!((last.gsi, last.type_), (25, KVM_IRQ_ROUTING_MSI));
        // SAFETY: an MSI entry holds the `msi` union member.
        let m = unsafe { last.u.msi };
        assert_eq!((m.address_lo, m.address_hi, m.data), (0xfee0_0000, 0, 0x52));
        t.free_msi(25).unwrap();
        assert!(t.entries().iter().all(|e| e.gsi != 25));
        assert_eq!(t.allocate_msi(msg(1)).unwrap(), 25, "freed GSI reused");
        t.free_msi(26).unwrap();
        t.free_msi(25).unwrap();
        assert_eq!(t.allocate_msi(msg(1)).unwrap(), 25);
        assert!(matches!(
            t.set_msi(5, msg(1)),
            Err(GsiRoutingError::NotAllocated(5))
        ));
        assert!(matches!(
            t.free_msi(30),
            Err(GsiRoutingError::NotAllocated(30))
        ));
        assert_eq!(t.to_kvm().unwrap().as_slice().len(), 42);
        assert_eq!(t.msi_routes(), vec![(24, msg(0x41)), (25, msg(1))]);
    }

    #[test]
    fn table_refuses_more_routes_than_kvm_allows() {
        let mut t = GsiRoutingTable::new();
        let mut n = 0;
        while t.allocate_msi(msg(n)).is_ok() {
            n += 1;
        }
        assert_eq!(n as usize, KVM_MAX_IRQ_ROUTES - 40);
        assert_eq!(t.entries().len(), KVM_MAX_IRQ_ROUTES);
        assert!(
            t.entries()
                .iter()
                .all(|e| (e.gsi as usize) < KVM_MAX_IRQ_ROUTES)
        );
        assert!(t.to_kvm().is_ok(), "a full table still fits the ioctl");
        t.free_msi(100).unwrap();
        assert_eq!(
            t.allocate_msi(msg(0)).unwrap(),
            100,
            "a freed GSI is usable again"
        );
    }
}
