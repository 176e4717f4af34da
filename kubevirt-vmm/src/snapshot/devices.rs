//! The VM's bus devices in a snapshot: each one's bus, range, name and saved state.
//!
//! A restore first compares this list with the devices of the VM being built (which the
//! embedding program adds again, as it did for the original VM): any difference is refused,
//! naming the device, before any state is written.

use std::sync::PoisonError;

use super::codec::{CodecError, Decoder, Encoder, field};
use crate::bus::{Bus, BusRange, DeviceStateError};
use crate::vcpu::Buses;

/// Most devices a decoder accepts.
const MAX_DEVICES: usize = 4096;

/// Errors saving, matching or restoring devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceSnapshotError {
    /// A device cannot save or take its state.
    #[error("device {name} on the {bus} bus at {range}: {source}")]
    State {
        /// Its name.
        name: String,
        /// Its bus.
        bus: String,
        /// Its range.
        range: BusRange,
        /// What it said.
        #[source]
        source: DeviceStateError,
    },
    /// The VM being built has other devices than the snapshot.
    #[error(
        "the snapshot does not match the VM being built: {detail} (add the same devices, at the same places, as the VM the snapshot was taken of)"
    )]
    Mismatch {
        /// The first difference, naming the device.
        detail: String,
    },
}

/// One device as the snapshot records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// "pio" or "mmio".
    pub bus: String,
    /// Its range on the bus.
    pub range: BusRange,
    /// [`crate::BusDevice::snapshot_name`].
    pub name: String,
    /// [`crate::BusDevice::save_state`]'s answer.
    pub state: Option<Vec<u8>>,
}

impl DeviceRecord {
    fn describe(&self) -> String {
        format!("{} on the {} bus at {}", self.name, self.bus, self.range)
    }
}

fn lock_each(bus: &Bus, mut f: impl FnMut(BusRange, &mut dyn crate::BusDevice)) {
    for (range, device) in bus.devices() {
        let mut guard = device.lock().unwrap_or_else(PoisonError::into_inner);
        f(range, &mut *guard);
    }
}

/// Records every device on `buses` with its state (the vCPUs are parked).
///
/// # Errors
/// [`DeviceSnapshotError::State`] naming the first device that cannot save its state.
pub fn save_devices(buses: &Buses) -> Result<Vec<DeviceRecord>, DeviceSnapshotError> {
    let mut out = Vec::new();
    let mut failure = None;
    for bus in [&buses.pio, &buses.mmio] {
        lock_each(bus, |range, device| {
            if failure.is_some() {
                return;
            }
            let name = device.snapshot_name().to_string();
            match device.save_state() {
                Ok(state) => out.push(DeviceRecord {
                    bus: bus.name().to_string(),
                    range,
                    name,
                    state,
                }),
                Err(source) => {
                    failure = Some(DeviceSnapshotError::State {
                        name,
                        bus: bus.name().to_string(),
                        range,
                        source,
                    })
                }
            }
        });
    }
    failure.map_or(Ok(out), Err)
}

/// Lets every device on `buses` carry on after [`save_devices`] (see
/// [`crate::BusDevice::resume`]).
pub fn resume_devices(buses: &Buses) {
    for bus in [&buses.pio, &buses.mmio] {
        lock_each(bus, |_, device| device.resume());
    }
}

/// The devices of `buses` without their states, for comparing with a snapshot.
fn list_devices(buses: &Buses) -> Vec<DeviceRecord> {
    let mut out = Vec::new();
    for bus in [&buses.pio, &buses.mmio] {
        lock_each(bus, |range, device| {
            out.push(DeviceRecord {
                bus: bus.name().to_string(),
                range,
                name: device.snapshot_name().to_string(),
                state: None,
            })
        });
    }
    out
}

/// Checks that `buses` holds exactly the devices of `saved`.
///
/// # Errors
/// [`DeviceSnapshotError::Mismatch`] naming the first device that differs.
pub fn match_devices(buses: &Buses, saved: &[DeviceRecord]) -> Result<(), DeviceSnapshotError> {
    let built = list_devices(buses);
    let key = |r: &DeviceRecord| (r.bus.clone(), r.range, r.name.clone());
    let in_built: Vec<_> = built.iter().map(key).collect();
    let in_saved: Vec<_> = saved.iter().map(key).collect();
    if let Some(s) = saved.iter().find(|s| !in_built.contains(&key(s))) {
        // The same device elsewhere on the same bus, at a place the snapshot has nothing of
        // that name: it moved.
        let moved = built
            .iter()
            .find(|b| b.name == s.name && b.bus == s.bus && !in_saved.contains(&key(b)));
        let detail = match moved {
            Some(b) => format!(
                "the snapshot has {}, the VM has it at {}",
                s.describe(),
                b.range
            ),
            None => format!(
                "the snapshot has {}, the VM has no such device",
                s.describe()
            ),
        };
        return Err(DeviceSnapshotError::Mismatch { detail });
    }
    if let Some(b) = built.iter().find(|b| !in_saved.contains(&key(b))) {
        return Err(DeviceSnapshotError::Mismatch {
            detail: format!(
                "the VM has {}, the snapshot has no such device",
                b.describe()
            ),
        });
    }
    Ok(())
}

/// Checks the devices (as [`match_devices`]) and gives each its saved state.
///
/// # Errors
/// [`DeviceSnapshotError`] naming the device that differs or refused its state.
pub fn restore_devices(buses: &Buses, saved: &[DeviceRecord]) -> Result<(), DeviceSnapshotError> {
    match_devices(buses, saved)?;
    let mut failure = None;
    for bus in [&buses.pio, &buses.mmio] {
        lock_each(bus, |range, device| {
            let record = saved
                .iter()
                .find(|r| r.bus == bus.name() && r.range == range);
            let Some(record) = record else { return };
            let Some(state) = &record.state else { return };
            if failure.is_some() {
                return;
            }
            if let Err(source) = device.restore_state(state) {
                failure = Some(DeviceSnapshotError::State {
                    name: record.name.clone(),
                    bus: record.bus.clone(),
                    range,
                    source,
                });
            }
        });
    }
    failure.map_or(Ok(()), Err)
}

/// Appends the device list to a snapshot payload.
pub fn encode_devices(records: &[DeviceRecord], e: &mut Encoder) {
    e.len(records.len());
    for r in records {
        e.str(&r.bus);
        e.u64(r.range.base);
        e.u64(r.range.len);
        e.str(&r.name);
        match &r.state {
            None => e.u8(0),
            Some(state) => {
                e.u8(1);
                e.bytes(state);
            }
        }
    }
}

/// Reads the device list back.
///
/// # Errors
/// [`CodecError`] naming the field that is truncated or invalid.
pub fn decode_devices(d: &mut Decoder<'_>) -> Result<Vec<DeviceRecord>, CodecError> {
    let n = d.len(MAX_DEVICES, &field("device count"))?;
    (0..n)
        .map(|i| {
            let f = |what: &'static str| move || format!("device {i} {what}");
            let bus = d.str(&f("bus"))?.to_string();
            let base = d.u64(&f("base"))?;
            let len = d.u64(&f("length"))?;
            let name = d.str(&f("name"))?.to_string();
            let state = match d.u8(&f("state tag"))? {
                0 => None,
                1 => Some(d.bytes(&f("state"))?.to_vec()),
                tag => {
                    return Err(CodecError::BadTag {
                        what: format!("device {i} ({name}) state"),
                        tag,
                    });
                }
            };
            Ok(DeviceRecord {
                bus,
                range: BusRange { base, len },
                name,
                state,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::SharedDevice;
    use crate::devices::cmos::{Cmos, SystemClock};
    use std::sync::{Arc, Mutex};

    fn buses(cmos: SharedDevice, at: u64) -> Buses {
        let mut pio = Bus::new("pio");
        pio.insert(cmos, at, 2).unwrap();
        Buses {
            pio,
            mmio: Bus::new("mmio"),
        }
    }

    #[test]
    fn device_state_round_trips_and_a_moved_device_is_named() {
        let cmos = Arc::new(Mutex::new(Cmos::new(1 << 20, 0, SystemClock)));
        cmos.lock().unwrap().write_register(0x40, 0x77);
        let saved = save_devices(&buses(cmos, 0x70)).unwrap();
        let mut e = Encoder::new();
        encode_devices(&saved, &mut e);
        let buf = e.finish();
        let mut d = Decoder::new(&buf);
        let back = decode_devices(&mut d).unwrap();
        d.finish().unwrap();
        assert_eq!(back, saved);

        let fresh = Arc::new(Mutex::new(Cmos::new(1 << 20, 0, SystemClock)));
        restore_devices(&buses(fresh.clone(), 0x70), &back).unwrap();
        assert_eq!(fresh.lock().unwrap().read_register(0x40), 0x77);

        let moved = Arc::new(Mutex::new(Cmos::new(1 << 20, 0, SystemClock)));
        let err = restore_devices(&buses(moved, 0x80), &back).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("cmos on the pio bus at [0x70, 0x71]") && text.contains("[0x80, 0x81]"),
            "{text}"
        );
        let empty = Buses {
            pio: Bus::new("pio"),
            mmio: Bus::new("mmio"),
        };
        let err = restore_devices(&empty, &back).unwrap_err();
        assert!(err.to_string().contains("no such device"), "{err}");
    }
}
