//! Graceful shutdown as upstream does it: press the ACPI power button, give the guest its
//! `terminationGracePeriodSeconds` to power off, then stop the VM.

use kubevirt_vmm::{ExitReason, Vm};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How a shutdown request went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shutdown {
    /// The button is pressed; the VM is stopped if it still runs after the grace period.
    Requested,
    /// A shutdown is already under way; nothing more was done.
    AlreadyRequested,
    /// The VM has no power button (no ACPI): it was stopped at once.
    Stopped(ExitReason),
}

/// One VM's shutdown: the first request presses the button and arms the forced stop; later
/// ones (SIGTERM after a control-socket shutdown, say) do nothing more.
#[derive(Debug, Clone)]
pub struct Shutdowns {
    vm: Arc<Vm>,
    requested: Arc<AtomicBool>,
}

impl Shutdowns {
    /// Shutdowns of `vm`.
    pub fn new(vm: Arc<Vm>) -> Self {
        Shutdowns {
            vm,
            requested: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks the guest to shut down within `grace`; returns at once.
    pub fn request(&self, grace: Duration) -> Shutdown {
        if self.requested.swap(true, Ordering::SeqCst) {
            return Shutdown::AlreadyRequested;
        }
        if self.vm.press_power_button().is_err() {
            return Shutdown::Stopped(self.vm.stop());
        }
        let vm = self.vm.clone();
        let spawned = std::thread::Builder::new()
            .name("grace-period".into())
            .spawn(move || {
                if vm.wait_timeout(grace).is_none() {
                    eprintln!(
                        "kubevirt-launcher: the guest did not power off within {}s: stopping it",
                        grace.as_secs()
                    );
                    vm.stop();
                }
            });
        match spawned {
            Ok(_) => Shutdown::Requested,
            // No thread for the timer: do not leave a VM that may never stop.
            Err(_) => Shutdown::Stopped(self.vm.stop()),
        }
    }
}
