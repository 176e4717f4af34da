//! QEMU's ISA debug console at port 0x402: firmware (SeaBIOS, OVMF debug builds) writes its
//! log here one byte at a time. Reading the port returns 0xE9, which is how SeaBIOS knows the
//! console is there.

use std::io::Write;

use crate::bus::BusDevice;

/// The port SeaBIOS and OVMF write their log to.
pub const DEBUGCON_PORT: u16 = 0x402;
/// What a read returns.
pub const DEBUGCON_READBACK: u8 = 0xe9;

/// Appends every byte written to a sink (a log file).
pub struct Debugcon {
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for Debugcon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Debugcon")
    }
}

impl Debugcon {
    /// A debug console writing to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Debugcon { out }
    }
}

impl BusDevice for Debugcon {
    fn snapshot_name(&self) -> &'static str {
        "debugcon"
    }

    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(DEBUGCON_READBACK);
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        // A log that cannot be written is not the guest's problem.
        let _ = self.out.write_all(data).and_then(|()| self.out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_go_to_the_sink_and_reads_say_e9() {
        let sink = Sink::default();
        let mut d = Debugcon::new(Box::new(sink.clone()));
        d.write(0x402, 0, b"Sea");
        d.write(0x402, 0, b"BIOS");
        assert_eq!(&*sink.0.lock().unwrap(), b"SeaBIOS");
        let mut b = [0u8; 1];
        d.read(0x402, 0, &mut b);
        assert_eq!(b, [0xe9]);
    }
}
