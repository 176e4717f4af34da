//! One vCPU's architectural state: what `KVM_GET_*` reads and `KVM_SET_*` writes back.
//!
//! Saved on the vCPU's own thread while it is parked (the thread owns the fd), restored on the
//! building thread before the vCPU first runs. The order of the calls matters both ways, as
//! Firecracker and Cloud Hypervisor document it:
//! * save: `MP_STATE` first (reading it lets KVM accept pending INIT/SIPI events, which changes
//!   the rest), `VCPU_EVENTS` last;
//! * restore: `CPUID2` and `MP_STATE` first (they depend on whether the vCPU is the BSP),
//!   `REGS` before `VCPU_EVENTS` (setting registers drops pending exceptions, the events put
//!   them back), `SREGS` before `LAPIC` (SREGS carries the APIC base), `LAPIC` before `MSRS`
//!   (the TSC-deadline MSR only sticks on a configured LAPIC), `VCPU_EVENTS` last.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state,
    kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::VcpuFd;

use super::codec::{CodecError, Decoder, Encoder};

/// Most MSRs one `KVM_GET_MSRS`/`KVM_SET_MSRS` call moves (the kernel's own limit).
const MSR_BATCH: usize = 255;
/// Most MSRs a decoder accepts for one vCPU.
const MAX_MSRS: usize = 4096;

/// Errors saving or restoring a vCPU: the ioctl and the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    /// An ioctl failed.
    #[error("vCPU {index}: {ioctl} failed: {source}")]
    Ioctl {
        /// vCPU index.
        index: usize,
        /// The ioctl.
        ioctl: &'static str,
        /// The kernel's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_SET_MSRS` stopped before the end of the list.
    #[error(
        "vCPU {index}: KVM_SET_MSRS refused MSR {msr:#x} (set {set} of {total}): this host's KVM does not accept the saved value (was the snapshot taken on another CPU model?)"
    )]
    MsrRefused {
        /// vCPU index.
        index: usize,
        /// The first MSR not set.
        msr: u32,
        /// MSRs set before it.
        set: usize,
        /// MSRs to set.
        total: usize,
    },
    /// The saved TSC frequency cannot be set here.
    #[error(
        "vCPU {index}: the snapshot's TSC runs at {saved_khz} kHz, this host's at {host_khz} kHz, and KVM_SET_TSC_KHZ refused to scale it: {source}"
    )]
    TscFrequency {
        /// vCPU index.
        index: usize,
        /// Frequency in the snapshot.
        saved_khz: u32,
        /// Frequency of a fresh vCPU here.
        host_khz: u32,
        /// The kernel's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A wrapper for the kernel's variable-length arrays could not be built.
    #[error("vCPU {index}: building the {what} array for KVM failed ({count} entries)")]
    Array {
        /// vCPU index.
        index: usize,
        /// What array.
        what: &'static str,
        /// Its length.
        count: usize,
    },
}

/// A vCPU's state, as saved in a snapshot.
pub struct VcpuState {
    /// The CPUID the vCPU was given (restored first, as is: the guest keeps its features).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// Run state (runnable, halted, waiting for SIPI).
    pub mp_state: kvm_mp_state,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// FPU, SSE and AVX state (the legacy 4 KiB `KVM_GET_XSAVE` area).
    pub xsave: kvm_xsave,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
    /// The local APIC's register page.
    pub lapic: kvm_lapic_state,
    /// TSC frequency in kHz; 0 when KVM could not say.
    pub tsc_khz: u32,
    /// Every MSR of `KVM_GET_MSR_INDEX_LIST` that this vCPU could read, with its value.
    pub msrs: Vec<kvm_msr_entry>,
    /// Pending exceptions, interrupts, NMIs and SIPIs.
    pub events: kvm_vcpu_events,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("rip", &self.regs.rip)
            .field("cpuid_entries", &self.cpuid.len())
            .field("msrs", &self.msrs.len())
            .field("mp_state", &self.mp_state.mp_state)
            .finish_non_exhaustive()
    }
}

fn ioctl(index: usize, ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuStateError {
    move |source| VcpuStateError::Ioctl {
        index,
        ioctl,
        source,
    }
}

/// Reads every MSR of `indices` the vCPU can read. `KVM_GET_MSRS` stops at the first MSR it
/// cannot read; that one is skipped (logged) and the rest read on, so one MSR a host does not
/// implement for reading does not cost the others.
fn read_msrs(
    fd: &VcpuFd,
    index: usize,
    indices: &[u32],
) -> Result<Vec<kvm_msr_entry>, VcpuStateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(MSR_BATCH)];
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&i| kvm_msr_entry {
                index: i,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| VcpuStateError::Array {
            index,
            what: "MSR",
            count: entries.len(),
        })?;
        let n = fd
            .get_msrs(&mut msrs)
            .map_err(ioctl(index, "KVM_GET_MSRS"))?;
        out.extend_from_slice(&msrs.as_slice()[..n.min(chunk.len())]);
        if n < chunk.len() {
            log::debug!(
                "vCPU {index}: MSR {:#x} is in KVM's MSR list but not readable; not saved",
                chunk[n]
            );
            rest = &rest[n + 1..];
        } else {
            rest = &rest[chunk.len()..];
        }
    }
    Ok(out)
}

impl VcpuState {
    /// Reads the state of the vCPU behind `fd` (vCPU `index`), saving the MSRs of `msr_list`.
    /// The vCPU must be outside `KVM_RUN` (parked).
    ///
    /// # Errors
    /// [`VcpuStateError::Ioctl`] naming the `KVM_GET_*` call that failed.
    pub fn save(fd: &VcpuFd, index: usize, msr_list: &[u32]) -> Result<Self, VcpuStateError> {
        let mp_state = fd
            .get_mp_state()
            .map_err(ioctl(index, "KVM_GET_MP_STATE"))?;
        let regs = fd.get_regs().map_err(ioctl(index, "KVM_GET_REGS"))?;
        let sregs = fd.get_sregs().map_err(ioctl(index, "KVM_GET_SREGS"))?;
        let xsave = fd.get_xsave().map_err(ioctl(index, "KVM_GET_XSAVE"))?;
        let xcrs = fd.get_xcrs().map_err(ioctl(index, "KVM_GET_XCRS"))?;
        let debugregs = fd
            .get_debug_regs()
            .map_err(ioctl(index, "KVM_GET_DEBUGREGS"))?;
        let lapic = fd.get_lapic().map_err(ioctl(index, "KVM_GET_LAPIC"))?;
        let tsc_khz = fd.get_tsc_khz().unwrap_or(0);
        let cpuid = fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl(index, "KVM_GET_CPUID2"))?
            .as_slice()
            .to_vec();
        let msrs = read_msrs(fd, index, msr_list)?;
        let events = fd
            .get_vcpu_events()
            .map_err(ioctl(index, "KVM_GET_VCPU_EVENTS"))?;
        Ok(VcpuState {
            cpuid,
            mp_state,
            regs,
            sregs,
            xsave,
            xcrs,
            debugregs,
            lapic,
            tsc_khz,
            msrs,
            events,
        })
    }

    /// Writes this state into the fresh vCPU behind `fd` (vCPU `index`), in the order the
    /// module documentation gives.
    ///
    /// # Errors
    /// [`VcpuStateError`] naming the `KVM_SET_*` call that failed, the MSR refused, or a TSC
    /// frequency this host cannot provide.
    pub fn restore(&self, fd: &VcpuFd, index: usize) -> Result<(), VcpuStateError> {
        let cpuid = CpuId::from_entries(&self.cpuid).map_err(|_| VcpuStateError::Array {
            index,
            what: "CPUID",
            count: self.cpuid.len(),
        })?;
        fd.set_cpuid2(&cpuid)
            .map_err(ioctl(index, "KVM_SET_CPUID2"))?;
        if self.tsc_khz != 0 {
            let host_khz = fd.get_tsc_khz().unwrap_or(0);
            if host_khz != self.tsc_khz {
                fd.set_tsc_khz(self.tsc_khz)
                    .map_err(|source| VcpuStateError::TscFrequency {
                        index,
                        saved_khz: self.tsc_khz,
                        host_khz,
                        source,
                    })?;
            }
        }
        fd.set_mp_state(self.mp_state)
            .map_err(ioctl(index, "KVM_SET_MP_STATE"))?;
        fd.set_regs(&self.regs)
            .map_err(ioctl(index, "KVM_SET_REGS"))?;
        fd.set_sregs(&self.sregs)
            .map_err(ioctl(index, "KVM_SET_SREGS"))?;
        // SAFETY: `self.xsave` is a whole `kvm_xsave` read by KVM_GET_XSAVE (or decoded from
        // its exact byte size), so the kernel reads only memory it owns; KVM validates the
        // contents (XSTATE_BV against the supported features) and refuses what it cannot take.
        unsafe { fd.set_xsave(&self.xsave) }.map_err(ioctl(index, "KVM_SET_XSAVE"))?;
        fd.set_xcrs(&self.xcrs)
            .map_err(ioctl(index, "KVM_SET_XCRS"))?;
        fd.set_debug_regs(&self.debugregs)
            .map_err(ioctl(index, "KVM_SET_DEBUGREGS"))?;
        fd.set_lapic(&self.lapic)
            .map_err(ioctl(index, "KVM_SET_LAPIC"))?;
        for (batch_no, batch) in self.msrs.chunks(MSR_BATCH).enumerate() {
            let msrs = Msrs::from_entries(batch).map_err(|_| VcpuStateError::Array {
                index,
                what: "MSR",
                count: batch.len(),
            })?;
            let n = fd.set_msrs(&msrs).map_err(ioctl(index, "KVM_SET_MSRS"))?;
            if n < batch.len() {
                return Err(VcpuStateError::MsrRefused {
                    index,
                    msr: batch[n].index,
                    set: batch_no * MSR_BATCH + n,
                    total: self.msrs.len(),
                });
            }
        }
        fd.set_vcpu_events(&self.events)
            .map_err(ioctl(index, "KVM_SET_VCPU_EVENTS"))?;
        Ok(())
    }

    /// Appends this state to a snapshot payload.
    pub fn encode(&self, e: &mut Encoder) {
        e.len(self.cpuid.len());
        for entry in &self.cpuid {
            e.pod(entry);
        }
        e.pod(&self.mp_state);
        e.pod(&self.regs);
        e.pod(&self.sregs);
        e.pod(&self.xsave);
        e.pod(&self.xcrs);
        e.pod(&self.debugregs);
        e.pod(&self.lapic);
        e.u32(self.tsc_khz);
        e.len(self.msrs.len());
        for msr in &self.msrs {
            e.pod(msr);
        }
        e.pod(&self.events);
    }

    /// Reads vCPU `index`'s state back from a snapshot payload.
    ///
    /// # Errors
    /// [`CodecError`] naming the field that is truncated or too long.
    pub fn decode(d: &mut Decoder<'_>, index: usize) -> Result<Self, CodecError> {
        let f = |what: &'static str| move || format!("vCPU {index} {what}");
        let n = d.len(KVM_MAX_CPUID_ENTRIES, &f("CPUID entry count"))?;
        let cpuid = (0..n)
            .map(|_| d.pod(&f("CPUID entry")))
            .collect::<Result<_, _>>()?;
        let mp_state = d.pod(&f("MP state"))?;
        let regs = d.pod(&f("registers"))?;
        let sregs = d.pod(&f("segment registers"))?;
        let xsave = d.pod(&f("XSAVE area"))?;
        let xcrs = d.pod(&f("XCRs"))?;
        let debugregs = d.pod(&f("debug registers"))?;
        let lapic = d.pod(&f("LAPIC"))?;
        let tsc_khz = d.u32(&f("TSC frequency"))?;
        let n = d.len(MAX_MSRS, &f("MSR count"))?;
        let msrs = (0..n).map(|_| d.pod(&f("MSR"))).collect::<Result<_, _>>()?;
        let events = d.pod(&f("events"))?;
        Ok(VcpuState {
            cpuid,
            mp_state,
            regs,
            sregs,
            xsave,
            xcrs,
            debugregs,
            lapic,
            tsc_khz,
            msrs,
            events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VcpuState {
        VcpuState {
            cpuid: vec![kvm_cpuid_entry2 {
                function: 1,
                eax: 0x806f8,
                ..Default::default()
            }],
            mp_state: kvm_mp_state { mp_state: 0 },
            regs: kvm_regs {
                rip: 0x10_0000,
                rcx: 42,
                ..Default::default()
            },
            sregs: kvm_sregs::default(),
            xsave: kvm_xsave::default(),
            xcrs: kvm_xcrs::default(),
            debugregs: kvm_debugregs::default(),
            lapic: kvm_lapic_state::default(),
            tsc_khz: 2_000_000,
            msrs: vec![kvm_msr_entry {
                index: 0x10,
                data: 123,
                ..Default::default()
            }],
            events: kvm_vcpu_events::default(),
        }
    }

    #[test]
    fn state_round_trips_through_the_codec() {
        let mut e = Encoder::new();
        sample().encode(&mut e);
        let buf = e.finish();
        let mut d = Decoder::new(&buf);
        let back = VcpuState::decode(&mut d, 0).unwrap();
        d.finish().unwrap();
        assert_eq!(back.regs.rcx, 42);
        assert_eq!(back.cpuid[0].eax, 0x806f8);
        assert_eq!(back.msrs[0].data, 123);
        assert_eq!(back.tsc_khz, 2_000_000);
    }

    #[test]
    fn every_truncation_names_the_vcpu_and_field() {
        let mut e = Encoder::new();
        sample().encode(&mut e);
        let buf = e.finish();
        for cut in [0, 3, 4 + 20, buf.len() / 2, buf.len() - 1] {
            let err = VcpuState::decode(&mut Decoder::new(&buf[..cut]), 3).unwrap_err();
            assert!(err.to_string().contains("vCPU 3"), "{err}");
        }
    }
}
