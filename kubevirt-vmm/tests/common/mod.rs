//! Helpers shared by the integration tests: a recording bus device and a bounded wait.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubevirt_vmm::{BusDevice, ExitReason, Vm};

/// Longest any test guest may take; far above what they need, short enough to fail a hang.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One access seen by a [`Recorder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A read at (base, offset, size).
    Read(u64, u64, usize),
    /// A write at (base, offset, bytes).
    Write(u64, u64, Vec<u8>),
}

/// Records every access; reads return `read_value` (little-endian, truncated to the size).
#[derive(Debug, Default)]
pub struct Recorder {
    pub seen: Vec<Seen>,
    pub read_value: u64,
}

impl Recorder {
    pub fn shared(read_value: u64) -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder {
            seen: Vec::new(),
            read_value,
        }))
    }
}

impl BusDevice for Recorder {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        self.seen.push(Seen::Read(base, offset, data.len()));
        let bytes = self.read_value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        self.seen.push(Seen::Write(base, offset, data.to_vec()));
    }
}

/// Waits for the VM to end, failing the test (after stopping the VM) if it does not in time.
pub fn wait(vm: &Vm) -> ExitReason {
    match vm.wait_timeout(GUEST_TIMEOUT) {
        Some(reason) => reason,
        None => {
            let state = vm.state();
            vm.stop();
            panic!("guest did not finish within {GUEST_TIMEOUT:?} (state {state:?})");
        }
    }
}
