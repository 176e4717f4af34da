//! x86-64 specifics: the address map, boot GDT/TSS and page tables, entry registers, CPUID,
//! MSRs and LAPIC wiring, and the ioctls that put them into a vCPU.

pub mod cpuid;
pub mod gdt;
pub mod lapic;
pub mod layout;
pub mod msr;
pub mod paging;
pub mod regs;
pub mod topology;

use kvm_bindings::{CpuId, KVM_MP_STATE_RUNNABLE, Msrs, kvm_mp_state};
use kvm_ioctls::VcpuFd;
use crate::memory::GuestMemoryMmap;

use regs::EntryState;

/// Errors configuring a vCPU's architectural state. Each names the ioctl that failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// `KVM_SET_CPUID2` failed.
    #[error("KVM_SET_CPUID2 failed: {0}")]
    SetCpuid(#[source] kvm_ioctls::Error),
    /// Building the MSR list failed.
    #[error("building the boot MSR list failed: {0}")]
    MsrList(#[source] vmm_sys_util::fam::Error),
    /// `KVM_SET_MSRS` failed.
    #[error("KVM_SET_MSRS failed: {0}")]
    SetMsrs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_MSRS` set fewer MSRs than given.
    #[error(
        "KVM_SET_MSRS set only {set} of {wanted} boot MSRs (the first rejected is index {rejected:#x})"
    )]
    MsrsRejected {
        /// MSRs KVM accepted.
        set: usize,
        /// MSRs given.
        wanted: usize,
        /// Index of the first MSR KVM rejected.
        rejected: u32,
    },
    /// `KVM_GET_SREGS` failed.
    #[error("KVM_GET_SREGS failed: {0}")]
    GetSregs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_SREGS` failed.
    #[error("KVM_SET_SREGS failed: {0}")]
    SetSregs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_REGS` failed.
    #[error("KVM_SET_REGS failed: {0}")]
    SetRegs(#[source] kvm_ioctls::Error),
    /// `KVM_SET_FPU` failed.
    #[error("KVM_SET_FPU failed: {0}")]
    SetFpu(#[source] kvm_ioctls::Error),
    /// `KVM_GET_LAPIC` failed.
    #[error("KVM_GET_LAPIC failed: {0}")]
    GetLapic(#[source] kvm_ioctls::Error),
    /// `KVM_SET_LAPIC` failed.
    #[error("KVM_SET_LAPIC failed: {0}")]
    SetLapic(#[source] kvm_ioctls::Error),
    /// `KVM_SET_MP_STATE` failed.
    #[error("KVM_SET_MP_STATE failed: {0}")]
    SetMpState(#[source] kvm_ioctls::Error),
    /// Writing the boot GDT, TSS or page tables into guest memory failed.
    #[error("writing the boot tables into guest memory failed (is there RAM below 64 KiB?): {0}")]
    BootTables(#[source] vm_memory::GuestMemoryError),
}

/// Writes what every entry mode needs in guest memory: GDT, TSS (with `rsp0` for interrupts
/// from CPL 3) and the identity-mapped page tables.
pub fn write_boot_tables(
    mem: &GuestMemoryMmap,
    access: paging::PageAccess,
    rsp0: u64,
) -> Result<(), ArchError> {
    gdt::write_boot_gdt_and_tss(mem, rsp0).map_err(ArchError::BootTables)?;
    paging::write_identity_map(mem, access).map_err(ArchError::BootTables)?;
    Ok(())
}

/// Puts CPUID, MSRs and LAPIC wiring into a fresh vCPU; if `entry` is given also its registers
/// (a vCPU without one waits for INIT/SIPI from the boot processor).
pub fn configure_vcpu(
    vcpu: &VcpuFd,
    cpuid: &CpuId,
    entry: Option<&EntryState>,
) -> Result<(), ArchError> {
    vcpu.set_cpuid2(cpuid).map_err(ArchError::SetCpuid)?;
    let entries = msr::boot_msr_entries();
    let msrs = Msrs::from_entries(&entries).map_err(ArchError::MsrList)?;
    let set = vcpu.set_msrs(&msrs).map_err(ArchError::SetMsrs)?;
    if set != entries.len() {
        return Err(ArchError::MsrsRejected {
            set,
            wanted: entries.len(),
            rejected: entries[set].index,
        });
    }
    let mut lapic = vcpu.get_lapic().map_err(ArchError::GetLapic)?;
    lapic::set_virtual_wire(&mut lapic);
    vcpu.set_lapic(&lapic).map_err(ArchError::SetLapic)?;
    if let Some(entry) = entry {
        let sregs = vcpu.get_sregs().map_err(ArchError::GetSregs)?;
        vcpu.set_sregs(&regs::sregs_for(entry.mode, sregs))
            .map_err(ArchError::SetSregs)?;
        vcpu.set_regs(&regs::regs_for(entry))
            .map_err(ArchError::SetRegs)?;
        vcpu.set_fpu(&regs::boot_fpu()).map_err(ArchError::SetFpu)?;
        // With the in-kernel LAPIC every vCPU but the first would otherwise wait for
        // INIT/SIPI and never reach the entry point.
        let runnable = kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        };
        vcpu.set_mp_state(runnable).map_err(ArchError::SetMpState)?;
    }
    Ok(())
}
