//! Why a VM stopped running.

use std::fmt;

/// The reason a VM's run ended. The first reason recorded wins: a vCPU that fails while the VM
/// is already shutting down does not overwrite why it was shutting down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest powered off (`KVM_SYSTEM_EVENT_SHUTDOWN`; ACPI S5 once there is ACPI).
    PowerOff,
    /// The guest wrote `code` to the debug-exit port (test guests' power-off with a status).
    DebugExit {
        /// The byte written.
        code: u8,
    },
    /// The guest asked for a reset (i8042 pulse-reset command 0xFE, `KVM_SYSTEM_EVENT_RESET`).
    Reset,
    /// A vCPU shut down (`KVM_EXIT_SHUTDOWN`), which on x86 means a triple fault: the guest
    /// took an exception it could not deliver.
    TripleFault {
        /// The vCPU.
        vcpu: usize,
        /// Its instruction pointer at the fault.
        rip: u64,
    },
    /// The guest reported a crash (`KVM_SYSTEM_EVENT_CRASH`).
    GuestCrash {
        /// The vCPU that reported it.
        vcpu: usize,
    },
    /// A vCPU could not go on: an ioctl failed or KVM reported an exit the VMM cannot handle.
    VcpuError {
        /// The vCPU.
        vcpu: usize,
        /// What went wrong, naming the ioctl or exit.
        error: String,
    },
    /// The host stopped the VM ([`crate::Vm::stop`]).
    Stopped,
    /// The VM was live-migrated ([`crate::Vm::migrate_to`]): the target acknowledged it and
    /// the guest runs there now. This copy never resumes.
    Migrated,
}

impl ExitReason {
    /// Whether the run ended as intended: power-off, debug exit 0, a host stop, or a migration.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            ExitReason::PowerOff
                | ExitReason::DebugExit { code: 0 }
                | ExitReason::Stopped
                | ExitReason::Migrated
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::PowerOff => write!(f, "the guest powered off"),
            ExitReason::DebugExit { code } => {
                write!(f, "the guest wrote {code:#x} to the debug-exit port")
            }
            ExitReason::Reset => write!(f, "the guest requested a reset"),
            ExitReason::TripleFault { vcpu, rip } => write!(
                f,
                "vCPU {vcpu} triple-faulted at RIP {rip:#x}: the guest took an exception it could not handle"
            ),
            ExitReason::GuestCrash { vcpu } => {
                write!(f, "the guest reported a crash on vCPU {vcpu}")
            }
            ExitReason::VcpuError { vcpu, error } => write!(f, "vCPU {vcpu} failed: {error}"),
            ExitReason::Stopped => write!(f, "the VM was stopped by the host"),
            ExitReason::Migrated => {
                write!(f, "the VM was migrated: its guest runs on the migration target")
            }
        }
    }
}

/// Something that can end the VM: the VM's lifecycle implements it, devices that power off or
/// reset (debug-exit port, i8042) are generic over it so they can be tested without a VM.
pub trait ExitRequester: Send + Sync {
    /// Ends the VM with `reason` unless it is already ending.
    fn request_exit(&self, reason: ExitReason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_happened() {
        let e = ExitReason::TripleFault {
            vcpu: 1,
            rip: 0x10_0016,
        };
        assert_eq!(
            e.to_string(),
            "vCPU 1 triple-faulted at RIP 0x100016: the guest took an exception it could not handle"
        );
        assert!(!e.is_clean());
        assert!(ExitReason::DebugExit { code: 0 }.is_clean());
        assert!(!ExitReason::DebugExit { code: 1 }.is_clean());
    }
}
