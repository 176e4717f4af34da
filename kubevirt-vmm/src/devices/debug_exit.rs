//! The debug-exit port: a test guest writes a status byte to end the VM.
//!
//! Same idea as QEMU's `isa-debug-exit` (which defaults to port 0xf4 too), but the status is
//! reported as-is in [`ExitReason::DebugExit`] rather than folded into a process exit code.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::vm::exit::{ExitReason, ExitRequester};

/// The port test guests use.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Ends the VM with the first byte written. Reads return 0.
#[derive(Debug)]
pub struct DebugExit<E> {
    vm: Arc<E>,
}

impl<E: ExitRequester> DebugExit<E> {
    /// A debug-exit device that ends `vm`.
    pub fn new(vm: Arc<E>) -> Self {
        DebugExit { vm }
    }
}

impl<E: ExitRequester + 'static> BusDevice for DebugExit<E> {
    fn snapshot_name(&self) -> &'static str {
        "debug-exit"
    }

    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            self.vm.request_exit(ExitReason::DebugExit { code });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records exit requests.
    #[derive(Default, Debug)]
    pub(crate) struct Exits(pub Mutex<Vec<ExitReason>>);

    impl ExitRequester for Exits {
        fn request_exit(&self, reason: ExitReason) {
            self.0.lock().unwrap().push(reason);
        }
    }

    #[test]
    fn write_ends_the_vm_with_the_status() {
        let exits = Arc::new(Exits::default());
        let mut dev = DebugExit::new(exits.clone());
        dev.write(0xf4, 0, &[0x2a, 0, 0, 0]);
        dev.write(0xf4, 0, &[]);
        assert_eq!(
            *exits.0.lock().unwrap(),
            vec![ExitReason::DebugExit { code: 0x2a }]
        );
        let mut d = [0xffu8; 2];
        dev.read(0xf4, 0, &mut d);
        assert_eq!(d, [0, 0]);
    }
}
