//! The i8042 keyboard controller, reduced to what guests use it for in a VM: the CPU reset line.
//!
//! Register logic is vm-superio's `I8042Device`; this file wires its reset trigger to the VM
//! lifecycle and puts it on the port bus (data port 0x60, command/status port 0x64).

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use crate::bus::BusDevice;
use crate::vm::exit::{ExitReason, ExitRequester};

/// Data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// Command/status port; writing 0xFE here pulses the CPU reset line.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// Span of the device on the port bus, 0x60..=0x64.
pub const I8042_PORT_SPAN: u64 = 5;

/// Turns the controller's reset pulse into [`ExitReason::Reset`].
#[derive(Debug)]
pub struct ResetTrigger<E>(Arc<E>);

impl<E: ExitRequester> Trigger for ResetTrigger<E> {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request_exit(ExitReason::Reset);
        Ok(())
    }
}

/// The i8042 on the port bus.
#[derive(Debug)]
pub struct I8042<E: ExitRequester> {
    inner: I8042Device<ResetTrigger<E>>,
}

impl<E: ExitRequester> I8042<E> {
    /// An i8042 whose reset command ends `vm` with [`ExitReason::Reset`].
    pub fn new(vm: Arc<E>) -> Self {
        I8042 {
            inner: I8042Device::new(ResetTrigger(vm)),
        }
    }
}

impl<E: ExitRequester + 'static> BusDevice for I8042<E> {
    // vm-superio's controller exposes no state to save; guests use it to pulse the reset line,
    // which holds none, so it is saved as stateless.
    fn snapshot_name(&self) -> &'static str {
        "i8042"
    }

    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let value = u8::try_from(offset).map_or(0, |o| self.inner.read(o));
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if let (Ok(offset), Some(&value)) = (u8::try_from(offset), data.first()) {
            // The trigger is infallible: the only error type is `Infallible`.
            let _ = self.inner.write(offset, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::debug_exit::tests::Exits;

    #[test]
    fn reset_command_resets_the_vm() {
        let exits = Arc::new(Exits::default());
        let mut dev = I8042::new(exits.clone());
        dev.write(0x60, 4, &[0xd1]);
        assert!(
            exits.0.lock().unwrap().is_empty(),
            "other commands do nothing"
        );
        dev.write(0x60, 4, &[0xfe]);
        assert_eq!(*exits.0.lock().unwrap(), vec![ExitReason::Reset]);
    }

    #[test]
    fn status_reads_as_idle() {
        let exits = Arc::new(Exits::default());
        let mut dev = I8042::new(exits);
        let mut status = [0xffu8];
        dev.read(0x60, 4, &mut status);
        assert_eq!(
            status[0] & 0x2,
            0,
            "input buffer empty, so guests may send a command"
        );
    }
}
