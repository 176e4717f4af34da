//! The ACPI Generic Event Device (GED, `ACPI0013`): how a hardware-reduced platform, which has
//! no fixed power button, tells the guest the power button was pressed.
//!
//! The host sets an event bit ([`GedEvents::press_power_button`]) and raises an edge on IOAPIC
//! GSI `GED_IRQ`. An ACPI kernel's GED driver then runs the DSDT's `\_SB_.GED_._EVT`, which
//! reads the event register and does `Notify (\_SB_.PWRB, 0x80)` on the `PNP0C0C` power
//! button: Linux answers with an orderly shutdown ending in S5.
//!
//! # The event register, for guests that poll
//! A guest that takes no interrupts (a CPL 3 test guest, a `no_std` demo) reads the 32-bit
//! register at guest-physical [`GED_MMIO_ADDR`] (uncached MMIO, 4-byte access):
//! * each set bit is an event that happened since the last read: bit 0
//!   (`GED_EVENT_POWER_BUTTON`) = the power button was pressed; other bits read 0;
//! * **reading clears** the bits it returned (later presses set them again);
//! * writes are ignored; the 16 bytes from [`GED_MMIO_ADDR`] belong to the device, bytes past
//!   the first four read 0.
//!
//! The graceful answer to a press is ACPI S5: write `0x34` (`SLP_TYP` 5 << 2 | `SLP_EN`) to the
//! sleep-control port ([`super::power::SLEEP_CONTROL_PORT`], 0x600), which ends the VM with
//! [`crate::ExitReason::PowerOff`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use acpi_tables::Aml;
use acpi_tables::aml::{
    And, Device, EISAName, Equal, Field, FieldAccessType, FieldEntry, FieldLockRule,
    FieldUpdateRule, If, Interrupt, Local, Method, Name, Notify, OpRegion, OpRegionSpace, Path,
    ResourceTemplate, Store, ZERO,
};
use vm_superio::Trigger;

use crate::bus::{BusDevice, DeviceStateError};

/// Guest-physical address of the GED event register (in the MMIO hole, above the local APIC,
/// out of the window where firmware places PCI BARs).
pub const GED_MMIO_ADDR: u64 = 0xfef0_0000;
/// Bytes of MMIO the device occupies.
pub const GED_MMIO_SIZE: u64 = 0x10;
/// The IOAPIC GSI the GED raises (edge-triggered, active high).
pub const GED_IRQ: u32 = 5;
/// Event bit: the power button was pressed.
pub const GED_EVENT_POWER_BUTTON: u32 = 1 << 0;

/// How the GED raises its interrupt.
pub type GedTrigger = Arc<dyn Trigger<E = std::io::Error> + Send + Sync>;

/// The host's handle on the GED: sets event bits and interrupts the guest. Cheap to clone and
/// usable from any thread (the launcher's control loop, a signal handler thread).
#[derive(Clone)]
pub struct GedEvents {
    pending: Arc<AtomicU32>,
    trigger: GedTrigger,
}

impl std::fmt::Debug for GedEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GedEvents")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish()
    }
}

impl GedEvents {
    /// Presses the power button: sets `GED_EVENT_POWER_BUTTON` and raises `GED_IRQ`. The
    /// guest decides what to do (an ACPI OS shuts down); pressing again before it read the
    /// register is one event.
    pub fn press_power_button(&self) -> std::io::Result<()> {
        self.signal(GED_EVENT_POWER_BUTTON)
    }

    /// Sets `events` and raises the interrupt.
    fn signal(&self, events: u32) -> std::io::Result<()> {
        self.pending.fetch_or(events, Ordering::AcqRel);
        self.trigger.trigger()
    }

    /// Events set and not yet read by the guest.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Acquire)
    }
}

/// The GED's register on the MMIO bus.
#[derive(Debug)]
pub struct Ged {
    events: GedEvents,
}

impl Ged {
    /// A GED raising its interrupt through `trigger`.
    pub fn new(trigger: GedTrigger) -> Self {
        Ged {
            events: GedEvents {
                pending: Arc::new(AtomicU32::new(0)),
                trigger,
            },
        }
    }

    /// The host's handle.
    pub fn events(&self) -> GedEvents {
        self.events.clone()
    }
}

impl BusDevice for Ged {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset != 0 {
            return;
        }
        let value = self.events.pending.swap(0, Ordering::AcqRel);
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {}

    fn snapshot_name(&self) -> &'static str {
        "acpi-ged"
    }

    fn save_state(&mut self) -> Result<Option<Vec<u8>>, DeviceStateError> {
        Ok(Some(self.events.pending().to_le_bytes().to_vec()))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        let bytes: [u8; 4] = state.try_into().map_err(|_| {
            DeviceStateError::Invalid(format!("GED state is {} bytes, not 4", state.len()))
        })?;
        self.events
            .pending
            .store(u32::from_le_bytes(bytes), Ordering::Release);
        Ok(())
    }
}

/// The DSDT's AML for the GED (`\_SB_.GED_`) and the power button (`\_SB_.PWRB`).
pub fn ged_aml(aml: &mut Vec<u8>) {
    let hid = Name::new("_HID".into(), &"ACPI0013".to_string());
    let uid = Name::new("_UID".into(), &0u8);
    let irq = Interrupt::new(true, true, false, false, GED_IRQ);
    let crs_template = ResourceTemplate::new(vec![&irq]);
    let crs = Name::new("_CRS".into(), &crs_template);
    let addr = GED_MMIO_ADDR;
    let len = 4u32;
    let region = OpRegion::new("GDST".into(), OpRegionSpace::SystemMemory, &addr, &len);
    let field = Field::new(
        "GDST".into(),
        FieldAccessType::DWord,
        FieldLockRule::NoLock,
        FieldUpdateRule::WriteAsZeroes,
        vec![FieldEntry::Named(*b"GDAT", 32)],
    );
    let gdat = Path::new("GDAT");
    let read = Store::new(&Local(0), &gdat);
    let bit = GED_EVENT_POWER_BUTTON;
    let masked = And::new(&ZERO, &Local(0), &bit);
    let pressed = Equal::new(&masked, &bit);
    let pwrb = Path::new("\\_SB_.PWRB");
    let notify = Notify::new(&pwrb, &0x80u8);
    let check = If::new(&pressed, vec![&notify]);
    let evt = Method::new("_EVT".into(), 1, true, vec![&read, &check]);
    Device::new(
        "_SB_.GED_".into(),
        vec![&hid, &uid, &crs, &region, &field, &evt],
    )
    .to_aml_bytes(aml);

    let button_hid = EISAName::new("PNP0C0C");
    let button_hid = Name::new("_HID".into(), &button_hid);
    Device::new("_SB_.PWRB".into(), vec![&button_hid, &uid]).to_aml_bytes(aml);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Trigger for Count {
        type E = std::io::Error;
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn a_press_sets_the_bit_raises_the_irq_and_reading_clears_it() {
        let irq = Arc::new(Count::default());
        let mut ged = Ged::new(irq.clone());
        let events = ged.events();
        let mut d = [0xffu8; 4];
        ged.read(GED_MMIO_ADDR, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0, "nothing pressed yet");
        events.press_power_button().unwrap();
        events.press_power_button().unwrap();
        assert_eq!(irq.0.load(Ordering::Relaxed), 2);
        assert_eq!(events.pending(), GED_EVENT_POWER_BUTTON);
        ged.write(GED_MMIO_ADDR, 0, &[0, 0, 0, 0]);
        let mut other = [0xffu8; 4];
        ged.read(GED_MMIO_ADDR, 4, &mut other);
        assert_eq!(
            other, [0; 4],
            "bytes past the register read 0 and clear nothing"
        );
        ged.read(GED_MMIO_ADDR, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), GED_EVENT_POWER_BUTTON);
        ged.read(GED_MMIO_ADDR, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0, "reading cleared it");
        assert_eq!(events.pending(), 0);
    }

    #[test]
    fn the_aml_names_the_ged_its_register_and_the_power_button() {
        let mut aml = Vec::new();
        ged_aml(&mut aml);
        let has = |s: &[u8]| aml.windows(s.len()).any(|w| w == s);
        assert!(has(b"ACPI0013"));
        assert!(has(b"GED_") && has(b"PWRB") && has(b"_EVT") && has(b"GDAT"));
        assert!(has(&GED_MMIO_ADDR.to_le_bytes()[..4]));
    }
}
