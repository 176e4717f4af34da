//! The 16550A UART on the port bus, wired to a console backend and an interrupt line.
//!
//! Register emulation is vm-superio's `Serial`; this module gives it a bus face, an output
//! ([`ConsoleOutput`]) and statistics ([`ConsoleStats`], e.g. when the first byte arrived).

pub mod console;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use vm_superio::serial::{Error as SerialError, SerialEvents, SerialState};
use vm_superio::{Serial, Trigger};

pub use console::{ConsoleBuffer, ConsoleConfig, ConsoleError, ConsoleOutput};

use crate::bus::{BusDevice, DeviceStateError};

/// COM1's base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1's ISA interrupt line.
pub const COM1_IRQ: u32 = 4;
/// Registers a 16550 spans on the port bus.
pub const SERIAL_PORT_SPAN: u64 = 8;

/// Counters a console keeps; shared with whoever wants to watch the console.
#[derive(Debug, Default)]
pub struct ConsoleStats {
    first_byte: OnceLock<Instant>,
    bytes_out: AtomicU64,
    bytes_lost: AtomicU64,
}

impl ConsoleStats {
    /// When the guest's first byte reached the backend.
    pub fn first_byte_at(&self) -> Option<Instant> {
        self.first_byte.get().copied()
    }

    /// Bytes written to the backend.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Bytes the backend failed to take.
    pub fn bytes_lost(&self) -> u64 {
        self.bytes_lost.load(Ordering::Relaxed)
    }
}

/// vm-superio's event hooks, feeding [`ConsoleStats`].
#[derive(Debug, Clone, Default)]
pub struct StatsEvents(pub Arc<ConsoleStats>);

impl SerialEvents for StatsEvents {
    fn buffer_read(&self) {}

    fn out_byte(&self) {
        self.0.first_byte.get_or_init(Instant::now);
        self.0.bytes_out.fetch_add(1, Ordering::Relaxed);
    }

    fn tx_lost_byte(&self) {
        self.0.bytes_lost.fetch_add(1, Ordering::Relaxed);
    }

    fn in_buffer_empty(&self) {}
}

/// The UART's interrupt line, shared so that a restored UART gets the same one.
#[derive(Debug)]
pub struct SharedTrigger<T>(pub Arc<T>);

impl<T: Trigger> Trigger for SharedTrigger<T> {
    type E = T::E;

    fn trigger(&self) -> Result<(), T::E> {
        self.0.trigger()
    }
}

/// A 16550A UART: interrupts through `T`, output to `W`.
#[derive(Debug)]
pub struct SerialDevice<T: Trigger, W: Write> {
    uart: Serial<SharedTrigger<T>, StatsEvents, W>,
    irq: Arc<T>,
    stats: Arc<ConsoleStats>,
}

/// Bytes of a saved UART before its receive FIFO: the nine registers.
const SERIAL_REGISTERS: usize = 9;
/// vm-superio's receive FIFO size (its `FIFO_SIZE`, which it keeps private).
const UART_FIFO_SIZE: usize = 64;

impl<T: Trigger, W: Write> SerialDevice<T, W> {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: T, out: W) -> Self {
        let stats = Arc::new(ConsoleStats::default());
        let irq = Arc::new(irq);
        SerialDevice {
            uart: Serial::with_events(
                SharedTrigger(irq.clone()),
                StatsEvents(stats.clone()),
                out,
            ),
            irq,
            stats,
        }
    }

    /// The console's counters.
    pub fn stats(&self) -> Arc<ConsoleStats> {
        self.stats.clone()
    }

    /// Queues host input for the guest to read; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(input) {
            Ok(n) => n,
            // A full FIFO takes nothing; a failed interrupt still queued the bytes.
            Err(SerialError::FullFifo) => 0,
            Err(_) => input.len().min(self.uart.fifo_capacity()),
        }
    }

    /// The output backend.
    pub fn output(&self) -> &W {
        self.uart.writer()
    }
}

/// The UART's registers and receive FIFO as bytes.
fn encode_serial(state: &SerialState) -> Vec<u8> {
    let mut out = vec![
        state.baud_divisor_low,
        state.baud_divisor_high,
        state.interrupt_enable,
        state.interrupt_identification,
        state.line_control,
        state.line_status,
        state.modem_control,
        state.modem_status,
        state.scratch,
    ];
    out.extend_from_slice(&state.in_buffer);
    out
}

fn decode_serial(bytes: &[u8], fifo: usize) -> Result<SerialState, DeviceStateError> {
    if bytes.len() < SERIAL_REGISTERS || bytes.len() > SERIAL_REGISTERS + fifo {
        return Err(DeviceStateError::Invalid(format!(
            "UART state is {} bytes: expected {SERIAL_REGISTERS} register bytes and a receive FIFO of at most {fifo}",
            bytes.len()
        )));
    }
    Ok(SerialState {
        baud_divisor_low: bytes[0],
        baud_divisor_high: bytes[1],
        interrupt_enable: bytes[2],
        interrupt_identification: bytes[3],
        line_control: bytes[4],
        line_status: bytes[5],
        modem_control: bytes[6],
        modem_status: bytes[7],
        scratch: bytes[8],
        in_buffer: bytes[SERIAL_REGISTERS..].to_vec(),
    })
}

impl<T: Trigger + Send + Sync, W: Write + Send + Default> BusDevice for SerialDevice<T, W> {
    fn snapshot_name(&self) -> &'static str {
        "serial-16550"
    }

    fn save_state(&mut self) -> Result<Option<Vec<u8>>, DeviceStateError> {
        Ok(Some(encode_serial(&self.uart.state())))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        let state = decode_serial(state, UART_FIFO_SIZE)?;
        // vm-superio builds a UART from a state with its trigger and writer: take the writer
        // out of the current UART (a placeholder holds the field meanwhile).
        let events = || StatsEvents(self.stats.clone());
        let placeholder =
            Serial::with_events(SharedTrigger(self.irq.clone()), events(), W::default());
        let out = std::mem::replace(&mut self.uart, placeholder).into_writer();
        self.uart = Serial::from_state(&state, SharedTrigger(self.irq.clone()), events(), out)
            .map_err(|e| DeviceStateError::Invalid(format!("vm-superio refused it: {e:?}")))?;
        Ok(())
    }

    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let value = u8::try_from(offset).map_or(0xff, |o| self.uart.read(o));
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Ok(offset) = u8::try_from(offset) else {
            return;
        };
        for &value in data {
            // Output errors are counted by `StatsEvents::tx_lost_byte`; interrupt errors mean
            // the irqfd is gone, which only happens while the VM is being torn down.
            let _ = self.uart.write(offset, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Default)]
    struct CountingTrigger(std::sync::atomic::AtomicU32);
    impl Trigger for CountingTrigger {
        type E = ();
        fn trigger(&self) -> Result<(), ()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    fn device() -> (SerialDevice<CountingTrigger, ConsoleOutput>, ConsoleBuffer) {
        let buf = ConsoleBuffer::new();
        let out = ConsoleOutput::open(ConsoleConfig::Buffer(buf.clone())).unwrap();
        (SerialDevice::new(CountingTrigger::default(), out), buf)
    }

    #[test]
    fn transmitted_bytes_reach_the_backend_and_are_counted() {
        let (mut dev, buf) = device();
        assert!(dev.stats().first_byte_at().is_none());
        for b in b"Hello" {
            dev.write(0x3f8, 0, &[*b]);
        }
        assert_eq!(buf.text(), "Hello");
        assert_eq!(dev.stats().bytes_out(), 5);
        assert!(dev.stats().first_byte_at().is_some());
    }

    #[test]
    fn input_is_readable_by_the_guest() {
        let (mut dev, _) = device();
        assert_eq!(dev.enqueue_input(b"ok"), 2);
        let mut lsr = [0u8];
        dev.read(0x3f8, 5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut d = [0u8];
        dev.read(0x3f8, 0, &mut d);
        assert_eq!(d[0], b'o');
    }

    #[test]
    fn transmit_interrupt_fires_when_enabled() {
        let (mut dev, _) = device();
        let count = |dev: &SerialDevice<CountingTrigger, ConsoleOutput>| {
            dev.uart.interrupt_evt().0.0.load(Ordering::Relaxed)
        };
        dev.write(0x3f8, 1, &[0x02]); // IER: THR empty, which it is: interrupt at once
        assert_eq!(count(&dev), 1);
        let mut iir = [0u8];
        dev.read(0x3f8, 2, &mut iir); // acknowledge
        assert_eq!(iir[0] & 0x0f, 0x02, "THR-empty interrupt pending");
        dev.write(0x3f8, 0, b"x");
        assert_eq!(count(&dev), 2, "transmitting raises it again");
    }

    #[test]
    fn state_round_trips_into_a_new_uart() {
        let (mut dev, _) = device();
        dev.write(0x3f8, 7, &[0x5a]); // scratch
        dev.write(0x3f8, 3, &[0x03]); // LCR 8N1
        dev.enqueue_input(b"pending");
        let saved = dev.save_state().unwrap().unwrap();
        let (mut other, buf) = device();
        other.restore_state(&saved).unwrap();
        let mut d = [0u8];
        other.read(0x3f8, 7, &mut d);
        assert_eq!(d[0], 0x5a);
        other.read(0x3f8, 0, &mut d);
        assert_eq!(d[0], b'p', "the receive FIFO came along");
        other.write(0x3f8, 0, b"x");
        assert_eq!(buf.text(), "x", "output still reaches the backend");
        assert!(other.restore_state(&[1, 2]).is_err());
        assert!(other.restore_state(&[0; 200]).is_err());
    }

    proptest! {
        /// Whatever a guest does to the registers, the device does not panic, and bytes written
        /// to THR outside loopback/DLAB mode all reach the backend.
        #[test]
        fn arbitrary_register_traffic(ops in proptest::collection::vec((0u64..10, any::<u8>(), any::<bool>()), 0..200)) {
            let (mut dev, _) = device();
            for (offset, value, write) in ops {
                if write {
                    dev.write(0x3f8, offset, &[value]);
                } else {
                    let mut d = [0u8; 2];
                    dev.read(0x3f8, offset, &mut d);
                }
            }
            dev.write(0x3f8, 3, &[0x03]); // LCR: 8N1, DLAB off
            dev.write(0x3f8, 4, &[0x00]); // MCR: loopback off
            let before = dev.stats().bytes_out();
            dev.write(0x3f8, 0, b"z");
            prop_assert_eq!(dev.stats().bytes_out(), before + 1);
        }
    }
}
