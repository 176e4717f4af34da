//! Virtio over PCI (modern transport). Requests complete by polling the used ring; a queue can
//! also raise an MSI-X vector (virtio-net's receive queue does, to wake the halted guest).

pub mod blk;
pub mod net;
pub mod queue;

use crate::dma::Arena;
use crate::hw::mmio::{r8, r16, r32, w8, w16, w32, w64};
use crate::hw::pci::Function;
use queue::Queue;

/// Virtio's PCI vendor id.
pub const VENDOR: u16 = 0x1af4;
/// Modern device ids are 0x1040 + the virtio device type.
pub const DEVICE_BLOCK: u16 = 0x1042;
/// virtio-net.
pub const DEVICE_NET: u16 = 0x1041;
/// virtio-console.
pub const DEVICE_CONSOLE: u16 = 0x1043;
/// virtio-rng.
pub const DEVICE_RNG: u16 = 0x1044;

/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u64 = 1 << 32;

const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const MSIX_ENABLE: u32 = 1 << 31;
const MSIX_FUNCTION_MASK: u32 = 1 << 30;
const MSIX_CONFIG: u64 = 0x10;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_DEVICE: u8 = 4;

const STATUS_ACKNOWLEDGE: u8 = 1;
const STATUS_DRIVER: u8 = 2;
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;

// Common configuration fields.
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const DEVICE_STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
/// No MSI-X vector: the queue does not interrupt.
pub const NO_VECTOR: u16 = 0xffff;

/// The largest queue this driver sets up.
pub const MAX_QUEUE_SIZE: u16 = 16;

/// A virtio-pci function's regions.
pub struct Transport {
    function: Function,
    /// The MSI-X capability's offset and its table's address.
    msix: Option<(u8, u64)>,
    common: u64,
    notify: u64,
    notify_multiplier: u32,
    /// Device-specific configuration.
    pub device: u64,
}

impl Transport {
    /// Finds the common, notify and device regions of `f`.
    pub fn probe(f: Function) -> Option<Transport> {
        f.enable();
        let (mut common, mut notify, mut device, mut notify_multiplier) = (None, None, None, 0);
        for cap in f.capabilities(CAP_VENDOR) {
            let region = f
                .bar(f.read8(cap + 4))
                .map(|b| b + u64::from(f.read32(cap + 8)));
            match f.read8(cap + 3) {
                CFG_COMMON => common = common.or(region),
                CFG_NOTIFY => {
                    notify = notify.or(region);
                    notify_multiplier = f.read32(cap + 16);
                }
                CFG_DEVICE => device = device.or(region),
                _ => {}
            }
        }
        let msix = f.capabilities(CAP_MSIX).next().and_then(|cap| {
            let table = f.read32(cap + 4);
            let bar = f.bar((table & 7) as u8)?;
            Some((cap, bar + u64::from(table & !7)))
        });
        Some(Transport {
            function: f,
            msix,
            common: common?,
            notify: notify?,
            notify_multiplier,
            device: device.unwrap_or(0),
        })
    }

    fn status(&self) -> u8 {
        r8(self.common + DEVICE_STATUS)
    }

    fn set_status(&self, bits: u8) {
        w8(self.common + DEVICE_STATUS, self.status() | bits);
    }

    /// Resets the device and negotiates `VERSION_1` plus whatever of `wanted` it offers.
    /// Returns the features agreed, or `None` if the device refuses them.
    pub fn negotiate(&self, wanted: u64) -> Option<u64> {
        w8(self.common + DEVICE_STATUS, 0);
        while self.status() != 0 {
            core::hint::spin_loop();
        }
        self.set_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let mut offered = 0u64;
        for half in 0..2u32 {
            w32(self.common + DEVICE_FEATURE_SELECT, half);
            offered |= u64::from(r32(self.common + DEVICE_FEATURE)) << (32 * half);
        }
        if offered & F_VERSION_1 == 0 {
            return None;
        }
        let agreed = offered & (wanted | F_VERSION_1);
        for half in 0..2u32 {
            w32(self.common + DRIVER_FEATURE_SELECT, half);
            w32(self.common + DRIVER_FEATURE, (agreed >> (32 * half)) as u32);
        }
        self.set_status(STATUS_FEATURES_OK);
        (self.status() & STATUS_FEATURES_OK != 0).then_some(agreed)
    }

    /// Turns MSI-X on and points table entry `entry` at `vector` of this vCPU's LAPIC
    /// (configuration changes raise nothing). `false` if the function has no MSI-X.
    pub fn msix_route(&self, entry: u16, vector: u8, apic_id: u32) -> bool {
        let Some((cap, table)) = self.msix else {
            return false;
        };
        let f = self.function;
        let control = f.read32(cap);
        f.write32(cap, (control | MSIX_ENABLE) & !MSIX_FUNCTION_MASK);
        let e = table + 16 * u64::from(entry);
        w32(e, 0xfee0_0000 | (apic_id << 12));
        w32(e + 4, 0);
        w32(e + 8, u32::from(vector));
        w32(e + 12, 0);
        w16(self.common + MSIX_CONFIG, NO_VECTOR);
        true
    }

    /// The MSI-X table entry queue `index` raises, as the device kept it ([`NO_VECTOR`] when it
    /// refused the one the driver wrote).
    pub fn queue_vector(&self, index: u16) -> u16 {
        w16(self.common + QUEUE_SELECT, index);
        r16(self.common + QUEUE_MSIX_VECTOR)
    }

    /// Sets up queue `index` with at most [`MAX_QUEUE_SIZE`] entries, raising MSI-X table
    /// entry `vector` when it uses a buffer ([`NO_VECTOR`]: never).
    pub fn queue(&self, index: u16, arena: &mut Arena, vector: u16) -> Option<Queue> {
        w16(self.common + QUEUE_SELECT, index);
        let size = r16(self.common + QUEUE_SIZE).min(MAX_QUEUE_SIZE);
        if size == 0 {
            return None;
        }
        w16(self.common + QUEUE_SIZE, size);
        let q = Queue::new(index, size, arena)?;
        w64(self.common + QUEUE_DESC, q.desc);
        w64(self.common + QUEUE_DRIVER, q.avail);
        w64(self.common + QUEUE_DEVICE, q.used);
        w16(self.common + QUEUE_MSIX_VECTOR, vector);
        let off = u64::from(r16(self.common + QUEUE_NOTIFY_OFF));
        w16(self.common + QUEUE_ENABLE, 1);
        Some(q.with_notify(self.notify + off * u64::from(self.notify_multiplier)))
    }

    /// Tells the device the driver is ready.
    pub fn driver_ok(&self) {
        self.set_status(STATUS_DRIVER_OK);
    }
}
