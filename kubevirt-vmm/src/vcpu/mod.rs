//! vCPUs: one thread each, running `KVM_RUN` and dispatching exits to the buses.

pub mod kick;

use std::sync::Arc;

use kvm_bindings::{
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN, kvm_lapic_state,
    kvm_regs, kvm_sregs,
};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::bus::Bus;
use crate::snapshot::VcpuState;
use crate::vm::exit::{ExitReason, ExitRequester};
use crate::vm::lifecycle::{Gate, Lifecycle};

/// The port-I/O and MMIO buses, as the vCPUs share them once the VM runs.
#[derive(Debug)]
pub struct Buses {
    /// Port I/O.
    pub pio: Bus,
    /// MMIO.
    pub mmio: Bus,
}

/// A vCPU's registers, captured when it parks for a pause.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VcpuSnapshot {
    /// General registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// The local APIC's register page (`KVM_GET_LAPIC`): pending interrupts sit in its IRR
    /// (`crate::arch::lapic::irr_bit`).
    pub lapic: kvm_lapic_state,
}

fn vcpu_error(vcpu: usize, error: String) -> Next {
    Next::Exit(ExitReason::VcpuError { vcpu, error })
}

/// A vCPU ready to run on its own thread.
#[derive(Debug)]
pub struct Vcpu {
    index: usize,
    fd: VcpuFd,
    buses: Arc<Buses>,
    lifecycle: Arc<Lifecycle>,
    /// The MSRs a snapshot saves (`KVM_GET_MSR_INDEX_LIST`).
    msr_list: Arc<[u32]>,
}

/// What the loop does after an exit.
enum Next {
    Continue,
    Exit(ExitReason),
}

impl Vcpu {
    pub(crate) fn new(
        index: usize,
        fd: VcpuFd,
        buses: Arc<Buses>,
        lifecycle: Arc<Lifecycle>,
        msr_list: Arc<[u32]>,
    ) -> Self {
        Vcpu {
            index,
            fd,
            buses,
            lifecycle,
            msr_list,
        }
    }

    /// The vCPU fd (before the vCPU's thread takes it).
    pub(crate) fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// Runs the guest until the VM ends. Call on the vCPU's own thread.
    pub(crate) fn run(mut self) {
        let guard = kick::KickGuard::arm(self.fd.get_kvm_run());
        self.lifecycle.register_thread(self.index);
        crate::threads::thread_started(crate::threads::VmmThread::Vcpu);
        loop {
            // Clear first, then look at the state: a kick that arrives after the look sets the
            // flag again and KVM_RUN returns at once (see `kick`).
            self.fd.set_kvm_immediate_exit(0);
            let index = self.index;
            let fd = &self.fd;
            let msr_list = &self.msr_list;
            let gate = self.lifecycle.gate(
                index,
                || {
                    Some(VcpuSnapshot {
                        regs: fd.get_regs().ok()?,
                        sregs: fd.get_sregs().ok()?,
                        lapic: fd.get_lapic().ok()?,
                    })
                },
                || VcpuState::save(fd, index, msr_list),
            );
            if gate == Gate::Exit {
                break;
            }
            if let Next::Exit(reason) = self.run_once() {
                self.lifecycle.request_exit(reason);
                break;
            }
        }
        self.lifecycle.unregister_thread(self.index);
        drop(guard);
    }

    fn run_once(&mut self) -> Next {
        let buses = &self.buses;
        let index = self.index;
        match self.fd.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                buses.pio.write(u64::from(port), data);
                Next::Continue
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                buses.pio.read(u64::from(port), data);
                Next::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                buses.mmio.write(addr, data);
                Next::Continue
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                buses.mmio.read(addr, data);
                Next::Continue
            }
            Ok(VcpuExit::Intr) => Next::Continue,
            Ok(VcpuExit::Shutdown) => {
                let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(u64::MAX);
                Next::Exit(ExitReason::TripleFault { vcpu: index, rip })
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => Next::Exit(ExitReason::PowerOff),
                KVM_SYSTEM_EVENT_RESET => Next::Exit(ExitReason::Reset),
                KVM_SYSTEM_EVENT_CRASH => Next::Exit(ExitReason::GuestCrash { vcpu: index }),
                other => vcpu_error(
                    index,
                    format!("KVM_EXIT_SYSTEM_EVENT of unknown type {other}"),
                ),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => vcpu_error(
                index,
                format!(
                    "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on host CPU {cpu} (invalid guest state)"
                ),
            ),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // union member the kernel filled.
                let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
                let n = (internal.ndata as usize).min(internal.data.len());
                let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(u64::MAX);
                vcpu_error(
                    index,
                    format!(
                        "KVM_EXIT_INTERNAL_ERROR suberror {} at RIP {rip:#x} (1 = emulation failure), data {:x?}",
                        internal.suberror,
                        &internal.data[..n]
                    ),
                )
            }
            Ok(VcpuExit::Hlt) => vcpu_error(
                index,
                "KVM_EXIT_HLT: the guest halted with no in-kernel irqchip to wake it".into(),
            ),
            Ok(other) => vcpu_error(index, format!("unexpected KVM exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Next::Continue,
            Err(e) => vcpu_error(index, format!("KVM_RUN failed: {e}")),
        }
    }
}
