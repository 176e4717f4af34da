//! Graceful shutdown as upstream does it: press the ACPI power button, give the guest its
//! `terminationGracePeriodSeconds` to power off, then stop the VM.

use crate::run::machine::Machine;
use kubevirt_vmm::ExitReason;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
    machine: Arc<Machine>,
    requested: Arc<AtomicBool>,
}

impl Shutdowns {
    /// Shutdowns of `machine`.
    pub fn new(machine: Arc<Machine>) -> Self {
        Shutdowns {
            machine,
            requested: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Asks the guest to shut down within `grace`; returns at once.
    pub fn request(&self, grace: Duration) -> Shutdown {
        if self.requested.swap(true, Ordering::SeqCst) {
            return Shutdown::AlreadyRequested;
        }
        self.machine.begin_shutdown();
        if self.machine.vm().press_power_button().is_err() {
            return Shutdown::Stopped(self.machine.vm().stop());
        }
        let machine = self.machine.clone();
        let spawned = std::thread::Builder::new()
            .name("grace-period".into())
            .spawn(move || {
                let deadline = Instant::now() + grace;
                while !machine.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if !machine.is_finished() {
                    tracing::warn!(
                        grace_period_seconds = grace.as_secs(),
                        "the guest did not power off within its grace period: stopping it"
                    );
                    machine.vm().stop();
                }
            });
        match spawned {
            Ok(_) => Shutdown::Requested,
            // No thread for the timer: do not leave a VM that may never stop.
            Err(_) => Shutdown::Stopped(self.machine.vm().stop()),
        }
    }
}
