//! The hardware-reduced ACPI sleep-control and reset registers (one I/O port each).
//!
//! A guest powers off by writing `SLP_TYP << 2 | SLP_EN` with `SLP_TYP` from `_S5_` (5), that
//! is 0x34, to the sleep-control register, and resets by writing [`RESET_VALUE`] to the reset
//! register.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::vm::exit::{ExitReason, ExitRequester};

/// The sleep-control register's port; the sleep-status register is the next one.
pub const SLEEP_CONTROL_PORT: u16 = 0x600;
/// Ports the device spans: sleep control, sleep status, (unused), reset.
pub const POWER_PORT_SPAN: u64 = 4;
/// The reset register's port.
pub const RESET_PORT: u16 = 0x603;
/// What the guest writes to the reset register.
pub const RESET_VALUE: u8 = 1;
/// `SLP_TYP` of S5 as the DSDT's `_S5_` says.
pub const S5_SLP_TYP: u8 = 5;
const SLP_EN: u8 = 1 << 5;

/// The power-management registers.
#[derive(Debug)]
pub struct AcpiPower<E> {
    vm: Arc<E>,
}

impl<E: ExitRequester> AcpiPower<E> {
    /// Registers that end `vm`.
    pub fn new(vm: Arc<E>) -> Self {
        AcpiPower { vm }
    }
}

impl<E: ExitRequester + 'static> BusDevice for AcpiPower<E> {
    fn snapshot_name(&self) -> &'static str {
        "acpi-power"
    }

    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match base + offset {
            p if p == u64::from(SLEEP_CONTROL_PORT)
                && v & SLP_EN != 0
                && (v >> 2) & 7 == S5_SLP_TYP =>
            {
                self.vm.request_exit(ExitReason::PowerOff);
            }
            p if p == u64::from(RESET_PORT) && v == RESET_VALUE => {
                self.vm.request_exit(ExitReason::Reset);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Seen(Mutex<Vec<ExitReason>>);
    impl ExitRequester for Seen {
        fn request_exit(&self, reason: ExitReason) {
            self.0.lock().unwrap().push(reason);
        }
    }

    #[test]
    fn s5_powers_off_reset_resets_other_writes_do_nothing() {
        let seen = Arc::new(Seen::default());
        let mut dev = AcpiPower::new(seen.clone());
        let base = u64::from(SLEEP_CONTROL_PORT);
        dev.write(base, 0, &[0x14]); // S5 without SLP_EN
        dev.write(base, 0, &[0x20 | (3 << 2)]); // S3
        dev.write(base, 1, &[0x34]); // status register
        dev.write(base, 3, &[2]);
        assert!(seen.0.lock().unwrap().is_empty());
        dev.write(base, 0, &[0x34]);
        dev.write(base, 3, &[RESET_VALUE]);
        assert_eq!(
            *seen.0.lock().unwrap(),
            vec![ExitReason::PowerOff, ExitReason::Reset]
        );
    }
}
