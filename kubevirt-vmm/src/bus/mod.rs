//! Address buses that route port-I/O and MMIO exits to devices.
//!
//! A device is a plain struct implementing [`BusDevice`]; it knows its registers, not KVM. A
//! [`Bus`] maps non-overlapping address ranges to devices and is frozen (shared read-only) once
//! the vCPUs run, so dispatch takes no bus-wide lock: only the target device's mutex.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// A device on a port-I/O or MMIO bus.
///
/// `base` is the start of the range the device was inserted at (a device may sit at several
/// ranges), `offset` the accessed address minus `base`. `data.len()` is the access size: 1, 2, 4
/// or 8 bytes (string port I/O delivers `count * size` bytes at once).
pub trait BusDevice: Send {
    /// A guest read: fill `data`.
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    /// A guest write of `data`.
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);

    /// The device's name in snapshots: a snapshot lists every device with its name and range,
    /// and a restore refuses a VM whose devices differ. Default: the Rust type name.
    fn snapshot_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// The device's state for a snapshot (called while the vCPUs are paused). `Ok(None)`, the
    /// default, says the device has nothing to save: right for devices whose behaviour does
    /// not depend on earlier accesses. A device with state must implement this and
    /// [`BusDevice::restore_state`], or return [`DeviceStateError::Unsupported`] so that
    /// snapshots of a VM holding it are refused rather than silently wrong.
    fn save_state(&mut self) -> Result<Option<Vec<u8>>, DeviceStateError> {
        Ok(None)
    }

    /// Puts back what [`BusDevice::save_state`] returned, before the vCPUs first run.
    /// The default refuses any state (a device that saves none is never given any).
    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        Err(DeviceStateError::Invalid(format!(
            "the device keeps no state, the snapshot has {} bytes for it",
            state.len()
        )))
    }

    /// The snapshot [`BusDevice::save_state`] was taken for is written (or failed): carry
    /// on from where saving stopped (a device that quiesced its workers to save a
    /// consistent state starts them again). Default: nothing.
    fn resume(&mut self) {}
}

/// Errors saving or restoring a device's state (the caller adds the device's name and range).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DeviceStateError {
    /// The device has state this VMM cannot save yet.
    #[error("its state cannot be saved yet ({0}), so this VM cannot be snapshotted")]
    Unsupported(&'static str),
    /// The saved state does not fit the device.
    #[error("its saved state is invalid: {0}")]
    Invalid(String),
    /// The device could not stop or start again around the snapshot.
    #[error("{0}")]
    Failed(String),
}

impl fmt::Debug for dyn BusDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BusDevice")
    }
}

/// A shared, lockable device as the bus holds it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// A half-open address range `[base, base + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusRange {
    /// First address.
    pub base: u64,
    /// Length in bytes, at least 1.
    pub len: u64,
}

impl BusRange {
    /// Last address inside the range.
    pub fn last(&self) -> u64 {
        self.base + (self.len - 1)
    }

    /// Whether two ranges share an address.
    pub fn overlaps(&self, other: &BusRange) -> bool {
        self.base <= other.last() && other.base <= self.last()
    }
}

impl fmt::Display for BusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x}]", self.base, self.last())
    }
}

/// Errors inserting a device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps past the end of the address space.
    #[error("{name} bus: invalid range base {base:#x} length {len:#x}")]
    InvalidRange {
        /// Bus name ("pio" or "mmio").
        name: &'static str,
        /// Requested base.
        base: u64,
        /// Requested length.
        len: u64,
    },
    /// The range overlaps a device already on the bus.
    #[error("{name} bus: range {new} overlaps the device already at {existing}")]
    Overlap {
        /// Bus name.
        name: &'static str,
        /// The range being inserted.
        new: BusRange,
        /// The range in the way.
        existing: BusRange,
    },
}

/// Outcome of a dispatched access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A device handled it.
    Handled,
    /// No device covers the address: reads see all-ones, writes are dropped.
    Unhandled,
    /// No device covers the address; the bus's fallback was given it.
    Fallback,
}

/// A set of devices keyed by address range.
pub struct Bus {
    name: &'static str,
    devices: BTreeMap<u64, (BusRange, SharedDevice)>,
    /// Gets the accesses no range covers (with base 0 and the address as offset), for
    /// registers the guest places itself (the PCI functions' port blocks). Stateless routes
    /// only: snapshots list the ranged devices, not this.
    fallback: Option<SharedDevice>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("name", &self.name)
            .field(
                "ranges",
                &self.devices.values().map(|(r, _)| *r).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Bus {
    /// An empty bus; `name` appears in errors.
    pub fn new(name: &'static str) -> Self {
        Bus {
            name,
            devices: BTreeMap::new(),
            fallback: None,
        }
    }

    /// Sends the accesses no device's range covers to `device` (see [`Access::Fallback`]).
    pub fn set_fallback(&mut self, device: SharedDevice) {
        self.fallback = Some(device);
    }

    /// Puts `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(BusError::InvalidRange {
                name: self.name,
                base,
                len,
            });
        }
        let new = BusRange { base, len };
        // Only the nearest ranges on either side can overlap: ranges are disjoint.
        let before = self.devices.range(..=new.last()).next_back();
        let after = self.devices.range(base..).next();
        for (_, (existing, _)) in before.into_iter().chain(after) {
            if existing.overlaps(&new) {
                return Err(BusError::Overlap {
                    name: self.name,
                    new,
                    existing: *existing,
                });
            }
        }
        self.devices.insert(base, (new, device));
        Ok(())
    }

    /// The device covering `addr`, with its range.
    pub fn resolve(&self, addr: u64) -> Option<(BusRange, &SharedDevice)> {
        let (_, (range, device)) = self.devices.range(..=addr).next_back()?;
        (addr <= range.last()).then_some((*range, device))
    }

    /// Routes a read at `addr` to its device; unclaimed reads return all-ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Access {
        match self.resolve(addr) {
            Some((range, device)) => {
                device.lock().unwrap_or_else(PoisonError::into_inner).read(
                    range.base,
                    addr - range.base,
                    data,
                );
                Access::Handled
            }
            None => match &self.fallback {
                Some(device) => {
                    data.fill(0xff);
                    device
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .read(0, addr, data);
                    Access::Fallback
                }
                None => {
                    data.fill(0xff);
                    Access::Unhandled
                }
            },
        }
    }

    /// Routes a write at `addr` to its device.
    pub fn write(&self, addr: u64, data: &[u8]) -> Access {
        match self.resolve(addr) {
            Some((range, device)) => {
                device.lock().unwrap_or_else(PoisonError::into_inner).write(
                    range.base,
                    addr - range.base,
                    data,
                );
                Access::Handled
            }
            None => match &self.fallback {
                Some(device) => {
                    device
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .write(0, addr, data);
                    Access::Fallback
                }
                None => Access::Unhandled,
            },
        }
    }

    /// The bus's name ("pio" or "mmio").
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The devices on this bus with their ranges, in address order.
    pub fn devices(&self) -> impl Iterator<Item = (BusRange, &SharedDevice)> + '_ {
        self.devices.values().map(|(r, d)| (*r, d))
    }

    /// The ranges on this bus, in address order.
    pub fn ranges(&self) -> impl Iterator<Item = BusRange> + '_ {
        self.devices.values().map(|(r, _)| *r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Records the last access; reads return the offset's low byte.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.writes.push((base, offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_address_with_offsets() {
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new("pio");
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        bus.insert(b.clone(), 0x60, 1).unwrap();
        assert_eq!(bus.write(0x3fb, &[7]), Access::Handled);
        assert_eq!(bus.write(0x60, &[1, 2]), Access::Handled);
        let mut d = [0u8; 1];
        assert_eq!(bus.read(0x3fd, &mut d), Access::Handled);
        assert_eq!(d, [5]);
        assert_eq!(a.lock().unwrap().writes, vec![(0x3f8, 3, vec![7])]);
        assert_eq!(b.lock().unwrap().writes, vec![(0x60, 0, vec![1, 2])]);
    }

    #[test]
    fn unclaimed_reads_are_all_ones() {
        let bus = Bus::new("mmio");
        let mut d = [0u8; 4];
        assert_eq!(bus.read(0x1000, &mut d), Access::Unhandled);
        assert_eq!(d, [0xff; 4]);
        assert_eq!(bus.write(0x1000, &d), Access::Unhandled);
    }

    #[test]
    fn the_fallback_gets_only_unclaimed_addresses() {
        let ranged = Arc::new(Mutex::new(Recorder::default()));
        let fallback = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new("pio");
        bus.insert(ranged.clone(), 0x60, 4).unwrap();
        bus.set_fallback(fallback.clone());
        assert_eq!(bus.write(0x61, &[1]), Access::Handled);
        assert_eq!(bus.write(0xb008, &[2]), Access::Fallback);
        let mut d = [0u8; 2];
        assert_eq!(bus.read(0xb00a, &mut d), Access::Fallback);
        assert_eq!(d, [0x0a, 0x0a], "the fallback sees the address as its offset");
        assert_eq!(ranged.lock().unwrap().writes, vec![(0x60, 1, vec![1])]);
        assert_eq!(fallback.lock().unwrap().writes, vec![(0, 0xb008, vec![2])]);
        assert_eq!(bus.ranges().count(), 1, "the fallback is no range");
    }

    #[test]
    fn overlaps_and_bad_ranges_are_refused() {
        let dev: SharedDevice = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new("mmio");
        bus.insert(dev.clone(), 0x1000, 0x100).unwrap();
        let err = bus.insert(dev.clone(), 0x10ff, 1).unwrap_err();
        assert!(matches!(err, BusError::Overlap { .. }));
        assert!(err.to_string().contains("0x10ff"));
        assert!(matches!(
            bus.insert(dev.clone(), 0xf00, 0x101),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), 0, 0),
            Err(BusError::InvalidRange { .. })
        ));
        assert!(matches!(
            bus.insert(dev.clone(), u64::MAX, 2),
            Err(BusError::InvalidRange { .. })
        ));
        bus.insert(dev.clone(), 0x1100, 1).unwrap();
        bus.insert(dev, u64::MAX, 1).unwrap();
    }

    proptest! {
        /// Whatever ranges are inserted, the bus resolves an address to the one range that
        /// contains it, if any: the same answer as a linear scan.
        #[test]
        fn resolve_matches_linear_scan(
            ranges in proptest::collection::vec((0u64..0x1000, 1u64..0x40), 1..24),
            probes in proptest::collection::vec(0u64..0x1100, 1..64),
        ) {
            let dev: SharedDevice = Arc::new(Mutex::new(Recorder::default()));
            let mut bus = Bus::new("pio");
            let mut accepted: Vec<BusRange> = Vec::new();
            for (base, len) in ranges {
                let r = BusRange { base, len };
                let fits = accepted.iter().all(|a| !a.overlaps(&r));
                prop_assert_eq!(bus.insert(dev.clone(), base, len).is_ok(), fits);
                if fits { accepted.push(r); }
            }
            for addr in probes {
                let expected = accepted.iter().find(|r| r.base <= addr && addr <= r.last()).copied();
                prop_assert_eq!(bus.resolve(addr).map(|(r, _)| r), expected);
            }
        }
    }
}
