//! The modern virtio-pci transport (virtio 1.2, 4.1): a [`PciDevice`] whose BAR 0 holds the
//! common configuration, ISR, device configuration and notification regions, each described
//! by a vendor-specific capability.
//!
//! Notifications: queue *n* is notified by a write at `BAR0 + NOTIFY_OFFSET + 4 n`. The VMM
//! registers each such address as a KVM ioeventfd ([`VirtioPciDevice::attach_ioevents`]), so
//! a notify wakes the device worker without an exit to userspace; when the guest moves BAR 0
//! the registrations move with it. A notify that does arrive here (no KVM, or a BAR outside the
//! PCI window) signals the same eventfd and is counted
//! ([`VirtioPciDevice::userspace_notifies`]).
//!
//! Interrupts: [`VirtioInterrupt`] sets ISR bits and, once the driver enabled MSI-X and
//! assigned vectors, raises the vector through an [`MsiSink`]: under a VM, a write to the
//! vector's irqfd, which KVM routes to the MSI the driver programmed (the route is installed
//! when the driver unmasks or reprograms the vector, see [`MsiSink::route`]). A masked vector
//! sets its pending bit and is raised when unmasked. There is no INTx: a driver either uses
//! MSI-X or polls.

pub mod common_cfg;
pub mod ioevents;
mod snapshot;

pub use ioevents::IoEventRegistrar;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::GuestAddress;
use crate::memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use self::common_cfg::{COMMON_CFG_LEN, CommonConfig, CommonWrite};
use super::device::{
    ActivateContext, DeviceQueue, HealthFlag, VirtioDevice, VirtioInterrupt, VirtioInterruptType,
};
use super::{VIRTIO_F_VERSION_1, status};
use crate::pci::config::{BarRequest, PciConfiguration, PciIds};
use crate::pci::msix::{self, MsiSink, MsixTable, VectorMessage};
use crate::bus::DeviceStateError;
use crate::pci::{PciDevice, PciError};

/// Virtio's PCI vendor ID.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are this plus the virtio device type.
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// Offset of the common configuration in BAR 0.
pub const COMMON_OFFSET: u64 = 0x0000;
/// Offset of the ISR byte in BAR 0.
pub const ISR_OFFSET: u64 = 0x1000;
/// Offset of the device configuration in BAR 0.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Offset of the notification region in BAR 0.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// The configuration-space dword register of BAR 0.
const BAR0_CONFIG_REG: usize = 4;
/// Bytes between two queues' notification addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
/// Offset of the MSI-X table in BAR 0.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// Offset of the MSI-X pending-bit array in BAR 0.
pub const MSIX_PBA_OFFSET: u64 = 0x6000;
/// Size of BAR 0.
pub const BAR0_SIZE: u64 = 0x8000;
const REGION_SIZE: u64 = 0x1000;

const PCI_CAP_ID_VNDR: u8 = 0x09;
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;

/// Errors creating a transport.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// Declaring the BAR or a capability failed.
    #[error("virtio-pci configuration space: {0}")]
    Config(#[from] PciError),
    /// Creating a queue eventfd failed.
    #[error("creating the notification eventfd for queue {queue}: {source}")]
    EventFd {
        /// The queue.
        queue: usize,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The device has too many queues for the notification region or the MSI-X table.
    #[error("{0} queues do not fit the notification region and MSI-X table (at most 511)")]
    TooManyQueues(usize),
}

/// The class code a device type gets (PCI class/subclass/prog-if).
fn class_for(device_type: u32) -> u32 {
    match device_type {
        1 => 0x02_00_00, // network controller
        2 => 0x01_80_00, // mass storage, other
        3 => 0x07_80_00, // communication, other
        _ => 0xff_00_00,
    }
}

/// MSI-X state the interrupt path needs: the table and which vector each source uses.
#[derive(Debug)]
struct MsixState {
    table: MsixTable,
    config_vector: u16,
    queue_vectors: Vec<u16>,
}

/// Sets the ISR bits (the driver reads and clears them at [`ISR_OFFSET`]) and sends the
/// source's MSI-X message when the driver set one up.
pub struct PciInterrupt {
    isr: AtomicU8,
    msix: Mutex<MsixState>,
    sink: Option<Arc<dyn MsiSink>>,
}

impl std::fmt::Debug for PciInterrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciInterrupt")
            .field("isr", &self.isr)
            .field("has_sink", &self.sink.is_some())
            .finish()
    }
}

impl PciInterrupt {
    fn state(&self) -> std::sync::MutexGuard<'_, MsixState> {
        self.msix.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After a table or control write: (re)installs the routes of deliverable vectors, then
    /// raises the vectors that became due (pending and now unmasked).
    ///
    /// The caller's table lock is held throughout, as in [`VirtioInterrupt::trigger`]: a
    /// device raising a vector with the message it read just before the driver rewrote the
    /// entry would otherwise put the stale message back into the route.
    fn routes_changed(&self, state: std::sync::MutexGuard<'_, MsixState>, due: Vec<VectorMessage>) {
        let Some(sink) = &self.sink else {
            return;
        };
        for (v, m) in state.table.deliverable_messages() {
            if let Err(e) = sink.route(v, m) {
                log::warn!("virtio-pci: routing MSI-X vector {v} ({m:?}): {e}");
            }
        }
        for (v, m) in due {
            if let Err(e) = sink.send(v, m) {
                log::warn!("virtio-pci: raising pending MSI-X vector {v} ({m:?}): {e}");
            }
        }
        drop(state);
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()> {
        let bit = match kind {
            VirtioInterruptType::Queue(_) => 1,
            VirtioInterruptType::Config => 2,
        };
        self.isr.fetch_or(bit, Ordering::AcqRel);
        // The table lock stays held while the sink raises the vector, so the message sent is
        // the entry's current one (see `routes_changed`); raising is an eventfd write.
        let mut state = self.state();
        let vector = match kind {
            VirtioInterruptType::Config => state.config_vector,
            VirtioInterruptType::Queue(q) => state
                .queue_vectors
                .get(usize::from(q))
                .copied()
                .unwrap_or(common_cfg::NO_VECTOR),
        };
        if vector == common_cfg::NO_VECTOR {
            return Ok(());
        }
        match (state.table.signal(vector), &self.sink) {
            (Some(m), Some(sink)) => sink.send(vector, m),
            _ => Ok(()),
        }
    }
}

/// A virtio device on PCI.
#[derive(Debug)]
pub struct VirtioPciDevice {
    config: PciConfiguration,
    device: Box<dyn VirtioDevice>,
    memory: GuestMemoryMmap,
    common: CommonConfig,
    events: Vec<EventFd>,
    interrupt: Arc<PciInterrupt>,
    msix_cap: usize,
    health: HealthFlag,
    active: bool,
    userspace_notifies: Arc<AtomicU64>,
    ioevents: Option<Arc<dyn IoEventRegistrar>>,
    /// The BAR 0 base the notify addresses are registered at.
    ioevents_base: Option<u64>,
}

impl VirtioPciDevice {
    /// Wraps `device`, whose queues will live in `memory`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        memory: GuestMemoryMmap,
    ) -> Result<Self, VirtioPciError> {
        let device_type = device.device_type();
        let queues = device.queue_max_sizes().len();
        let max_vectors = (MSIX_PBA_OFFSET - MSIX_TABLE_OFFSET) / msix::ENTRY_SIZE;
        if queues as u64 * u64::from(NOTIFY_OFF_MULTIPLIER) > REGION_SIZE
            || queues as u64 + 1 > max_vectors
        {
            return Err(VirtioPciError::TooManyQueues(queues));
        }
        let mut config = PciConfiguration::new(PciIds {
            vendor: VIRTIO_PCI_VENDOR,
            device: VIRTIO_PCI_DEVICE_BASE + device_type as u16,
            revision: 1,
            class: class_for(device_type),
            subsystem_vendor: VIRTIO_PCI_VENDOR,
            subsystem: 0x1100,
        });
        config.add_bar(
            0,
            BarRequest {
                size: BAR0_SIZE,
                is_64bit: true,
                prefetchable: false,
            },
        )?;
        for (kind, offset, len) in [
            (CAP_COMMON, COMMON_OFFSET, COMMON_CFG_LEN),
            (CAP_ISR, ISR_OFFSET, 4),
            (CAP_DEVICE, DEVICE_CFG_OFFSET, REGION_SIZE),
        ] {
            config.add_capability(&virtio_cap(kind, offset, len, None), &[])?;
        }
        config.add_capability(
            &virtio_cap(
                CAP_NOTIFY,
                NOTIFY_OFFSET,
                REGION_SIZE,
                Some(NOTIFY_OFF_MULTIPLIER),
            ),
            &[],
        )?;
        // One vector per queue plus one for configuration changes.
        let vectors = queues as u16 + 1;
        let (body, writable) =
            msix::capability(vectors, 0, MSIX_TABLE_OFFSET as u32, MSIX_PBA_OFFSET as u32);
        let msix_cap = config.add_capability(&body, &writable)?;
        let events = (0..queues)
            .map(|queue| {
                EventFd::new(libc::EFD_NONBLOCK)
                    .map_err(|source| VirtioPciError::EventFd { queue, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let common = CommonConfig::new(device.queue_max_sizes());
        Ok(VirtioPciDevice {
            config,
            device,
            memory,
            common,
            events,
            interrupt: Arc::new(PciInterrupt {
                isr: AtomicU8::new(0),
                msix: Mutex::new(MsixState {
                    table: MsixTable::new(vectors),
                    config_vector: common_cfg::NO_VECTOR,
                    queue_vectors: vec![common_cfg::NO_VECTOR; queues],
                }),
                sink: None,
            }),
            msix_cap,
            health: HealthFlag::default(),
            active: false,
            userspace_notifies: Arc::new(AtomicU64::new(0)),
            ioevents: None,
            ioevents_base: None,
        })
    }

    /// How many MSI-X vectors the function has (one per queue plus one for configuration).
    pub fn msix_vectors(&self) -> u16 {
        self.interrupt.state().queue_vectors.len() as u16 + 1
    }

    /// Delivers MSI-X messages through `sink` (without one, MSI-X only sets pending bits).
    pub fn with_msi_sink(mut self, sink: Arc<dyn MsiSink>) -> Self {
        if let Some(interrupt) = Arc::get_mut(&mut self.interrupt) {
            interrupt.sink = Some(sink);
        }
        self
    }

    /// Copies the vectors the driver assigned in the common configuration to the interrupt
    /// path.
    fn sync_vectors(&self) {
        let mut state = self.interrupt.state();
        state.config_vector = self.common.msix_config;
        for (v, q) in state.queue_vectors.iter_mut().zip(&self.common.queues) {
            *v = q.msix_vector;
        }
    }

    /// Registers the queues' notify addresses with `registrar` at BAR 0's current place, and
    /// moves them whenever the guest moves BAR 0.
    pub fn attach_ioevents(&mut self, registrar: Arc<dyn IoEventRegistrar>) -> std::io::Result<()> {
        self.ioevents = Some(registrar);
        self.sync_ioevents()
    }

    /// Brings the registrations to where BAR 0 is now.
    fn sync_ioevents(&mut self) -> std::io::Result<()> {
        let Some(registrar) = self.ioevents.clone() else {
            return Ok(());
        };
        let wanted = self
            .config
            .bar_address(0)
            .filter(|&base| registrar.accepts(base));
        if wanted == self.ioevents_base {
            return Ok(());
        }
        if let Some(old) = self.ioevents_base.take() {
            for (addr, e) in self.notify_addresses_at(old) {
                registrar.unregister(addr, e)?;
            }
        }
        if let Some(new) = wanted {
            for (addr, e) in self.notify_addresses_at(new) {
                registrar.register(addr, e)?;
            }
            self.ioevents_base = Some(new);
        }
        Ok(())
    }

    /// Queue notifications that reached this transport instead of being caught by their
    /// ioeventfd in KVM (each one cost an exit to userspace). Zero under a VM unless the guest
    /// moved BAR 0.
    pub fn userspace_notifies(&self) -> Arc<AtomicU64> {
        self.userspace_notifies.clone()
    }

    /// Each queue's notification address (at BAR 0's current place) and its eventfd.
    pub fn notify_addresses(&self) -> Vec<(u64, &EventFd)> {
        self.notify_addresses_at(self.config.bar_address(0).unwrap_or(0))
    }

    /// The same with BAR 0 at `base`.
    fn notify_addresses_at(&self, base: u64) -> Vec<(u64, &EventFd)> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let offset = NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_OFF_MULTIPLIER);
                (base + offset, e)
            })
            .collect()
    }

    /// The device status as the driver reads it.
    pub fn status(&self) -> u8 {
        let mut s = self.common.status;
        if self.health.is_broken() {
            s |= status::DEVICE_NEEDS_RESET;
        }
        s
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        self.common.reset();
        self.sync_vectors();
        self.interrupt.isr.store(0, Ordering::Release);
        self.health.clear();
        for e in &self.events {
            let _ = e.read();
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.common.status;
        let mut new = value;
        let setting = |new: u8, bit: u8| new & bit != 0 && old & bit == 0;
        if setting(new, status::FEATURES_OK) {
            let acked = self.common.driver_features;
            let ok = acked & !self.device_features() == 0 && acked & VIRTIO_F_VERSION_1 != 0;
            if !ok {
                log::warn!(
                    "virtio-pci: driver features {acked:#x} are not a subset of {:#x} with VERSION_1; refusing FEATURES_OK",
                    self.device_features()
                );
                new &= !status::FEATURES_OK;
            }
        }
        self.common.status = new;
        if setting(new, status::DRIVER_OK)
            && new & status::FEATURES_OK != 0
            && !self.active
            && let Err(e) = self.activate(None)
        {
            log::warn!(
                "virtio-pci: activating device type {}: {e}",
                self.device.device_type()
            );
            self.needs_reset();
        }
    }

    /// The device hit an error only a reset ends: `DEVICE_NEEDS_RESET` and, the driver having
    /// set `DRIVER_OK`, a configuration change notification (virtio 1.2, 2.1.2).
    fn needs_reset(&self) {
        self.health.mark_broken();
        if self.common.status & status::DRIVER_OK != 0
            && let Err(e) = self.interrupt.trigger(VirtioInterruptType::Config)
        {
            log::warn!("virtio-pci: the configuration change notification failed: {e}");
        }
    }

    /// Starts the device on the queues the driver set up; a restored device's queues start
    /// at the `positions` its snapshot saved.
    fn activate(&mut self, positions: Option<&[QueueState]>) -> Result<(), String> {
        let mut queues = Vec::with_capacity(self.common.queues.len());
        for (i, regs) in self.common.queues.iter().enumerate() {
            let mut q = Queue::new(regs.max_size).map_err(|e| format!("queue {i}: {e}"))?;
            if let Some(p) = positions.and_then(|p| p.get(i)) {
                q.set_next_avail(p.next_avail);
                q.set_next_used(p.next_used);
                q.set_event_idx(p.event_idx_enabled);
            }
            if regs.enabled {
                q.try_set_size(regs.size)
                    .and_then(|()| q.try_set_desc_table_address(GuestAddress(regs.desc)))
                    .and_then(|()| q.try_set_avail_ring_address(GuestAddress(regs.avail)))
                    .and_then(|()| q.try_set_used_ring_address(GuestAddress(regs.used)))
                    .map_err(|e| format!("queue {i}: {e}"))?;
                q.set_ready(true);
                if !q.is_valid(&self.memory) {
                    return Err(format!("queue {i}: rings are outside guest memory"));
                }
            }
            let event = self.events[i].try_clone().map_err(|e| e.to_string())?;
            queues.push(DeviceQueue { queue: q, event });
        }
        self.device
            .activate(ActivateContext {
                memory: self.memory.clone(),
                queues,
                interrupt: self.interrupt.clone(),
                health: self.health.clone(),
                acked_features: self.common.driver_features,
            })
            .map_err(|e| e.to_string())?;
        self.active = true;
        Ok(())
    }
}

/// A `virtio_pci_cap` (plus `notify_off_multiplier` for the notify capability) in BAR 0.
fn virtio_cap(kind: u8, offset: u64, len: u64, multiplier: Option<u32>) -> Vec<u8> {
    let cap_len = if multiplier.is_some() { 20 } else { 16 };
    let mut c = vec![PCI_CAP_ID_VNDR, 0, cap_len, kind, 0, 0, 0, 0];
    c.extend_from_slice(&(offset as u32).to_le_bytes());
    c.extend_from_slice(&(len as u32).to_le_bytes());
    if let Some(m) = multiplier {
        c.extend_from_slice(&m.to_le_bytes());
    }
    c
}

impl PciDevice for VirtioPciDevice {
    fn config(&self) -> &PciConfiguration {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }

    fn write_config_register(&mut self, reg: usize, offset: u64, data: &[u8]) {
        self.config.write_reg(reg, offset, data);
        // BAR 0 (and its upper half) moved: move the notify registrations with it. A failure
        // leaves notifies on the slow path, which still works.
        if (BAR0_CONFIG_REG..=BAR0_CONFIG_REG + 1).contains(&reg)
            && let Err(e) = self.sync_ioevents()
        {
            log::warn!("virtio-pci: moving the queue notify ioeventfds failed: {e}");
        }
        if reg == self.msix_cap / 4 {
            let control = (self.config.read_reg(reg) >> 16) as u16;
            let mut state = self.interrupt.state();
            let due = state.table.set_control(control);
            self.interrupt.routes_changed(state, due);
        }
    }

    fn save_state(&mut self) -> Result<Vec<u8>, DeviceStateError> {
        self.save_snapshot()
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        self.restore_snapshot(state)
    }

    fn resume(&mut self) {
        self.resume_after_snapshot();
    }

    fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if bar != 0 {
            return;
        }
        match offset {
            o if o < COMMON_CFG_LEN => {
                let features = self.device_features();
                self.common.read(o, data, features);
                if o == 0x14 && data.len() == 1 {
                    data[0] = self.status();
                }
            }
            ISR_OFFSET => {
                // Reading the ISR acknowledges it.
                if let Some(first) = data.first_mut() {
                    *first = self.interrupt.isr.swap(0, Ordering::AcqRel);
                }
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + REGION_SIZE).contains(&o) => {
                self.device.read_config(o - DEVICE_CFG_OFFSET, data);
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.interrupt
                    .state()
                    .table
                    .read_table(o - MSIX_TABLE_OFFSET, data);
            }
            o if (MSIX_PBA_OFFSET..BAR0_SIZE).contains(&o) => {
                self.interrupt
                    .state()
                    .table
                    .read_pba(o - MSIX_PBA_OFFSET, data);
            }
            _ => {}
        }
    }

    fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != 0 {
            return;
        }
        match offset {
            o if o < COMMON_CFG_LEN => {
                if let CommonWrite::Status(s) = self.common.write(o, data) {
                    self.write_status(s);
                }
                self.sync_vectors();
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                let mut state = self.interrupt.state();
                let due = state.table.write_table(o - MSIX_TABLE_OFFSET, data);
                self.interrupt.routes_changed(state, due);
            }
            o if (DEVICE_CFG_OFFSET..DEVICE_CFG_OFFSET + REGION_SIZE).contains(&o) => {
                self.device.write_config(o - DEVICE_CFG_OFFSET, data);
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + REGION_SIZE).contains(&o) => {
                self.userspace_notifies.fetch_add(1, Ordering::Relaxed);
                let queue = (o - NOTIFY_OFFSET) / u64::from(NOTIFY_OFF_MULTIPLIER);
                if let Some(e) = self.events.get(queue as usize) {
                    let _ = e.write(1);
                }
            }
            _ => {}
        }
    }
}

impl Drop for VirtioPciDevice {
    fn drop(&mut self) {
        if self.active {
            self.device.reset();
        }
    }
}

#[cfg(test)]
mod tests;
