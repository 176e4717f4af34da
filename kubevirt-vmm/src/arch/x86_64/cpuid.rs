//! CPUID: what KVM supports, minus what the user disabled, plus per-vCPU topology.
//!
//! Feature names are libvirt's (what KubeVirt's `spec.domain.cpu.features[].name` carries); a
//! feature with `policy: disable` lands in [`CpuFeatureMask`].

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

use super::topology::CpuTopology;

/// Which CPUID output register a feature bit lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuidReg {
    /// EAX
    Eax,
    /// EBX
    Ebx,
    /// ECX
    Ecx,
    /// EDX
    Edx,
}

/// One named CPUID feature bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFeature {
    /// libvirt's name for it.
    pub name: &'static str,
    /// CPUID leaf (EAX input).
    pub leaf: u32,
    /// CPUID sub-leaf (ECX input) for indexed leaves.
    pub subleaf: u32,
    /// Output register.
    pub reg: CpuidReg,
    /// Bit number in that register.
    pub bit: u8,
}

/// Errors building the CPUID a guest sees.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CpuidError {
    /// A feature name is not in the table.
    #[error("unknown CPU feature {0:?}: use a libvirt feature name such as \"avx2\" or \"vmx\"")]
    UnknownFeature(String),
}

macro_rules! features {
    ($( $leaf:literal / $sub:literal $reg:ident : $( $name:literal = $bit:literal ),+ ; )+) => {
        &[ $( $( CpuFeature { name: $name, leaf: $leaf, subleaf: $sub, reg: CpuidReg::$reg, bit: $bit }, )+ )+ ]
    };
}

/// The features that can be disabled, by libvirt name.
pub static CPU_FEATURES: &[CpuFeature] = features! {
    0x1/0 Ecx: "sse3" = 0, "pclmuldq" = 1, "dtes64" = 2, "monitor" = 3, "ds_cpl" = 4, "vmx" = 5,
        "smx" = 6, "est" = 7, "tm2" = 8, "ssse3" = 9, "cid" = 10, "fma" = 12, "cx16" = 13,
        "xtpr" = 14, "pdcm" = 15, "pcid" = 17, "dca" = 18, "sse4.1" = 19, "sse4.2" = 20,
        "x2apic" = 21, "movbe" = 22, "popcnt" = 23, "tsc-deadline" = 24, "aes" = 25,
        "xsave" = 26, "avx" = 28, "f16c" = 29, "rdrand" = 30;
    0x1/0 Edx: "fpu" = 0, "vme" = 1, "de" = 2, "pse" = 3, "tsc" = 4, "msr" = 5, "pae" = 6,
        "mce" = 7, "cx8" = 8, "apic" = 9, "sep" = 11, "mtrr" = 12, "pge" = 13, "mca" = 14,
        "cmov" = 15, "pat" = 16, "pse36" = 17, "pn" = 18, "clflush" = 19, "ds" = 21,
        "acpi" = 22, "mmx" = 23, "fxsr" = 24, "sse" = 25, "sse2" = 26, "ss" = 27, "ht" = 28,
        "tm" = 29, "ia64" = 30, "pbe" = 31;
    0x7/0 Ebx: "fsgsbase" = 0, "tsc_adjust" = 1, "bmi1" = 3, "hle" = 4, "avx2" = 5, "smep" = 7,
        "bmi2" = 8, "erms" = 9, "invpcid" = 10, "rtm" = 11, "mpx" = 14, "avx512f" = 16,
        "avx512dq" = 17, "rdseed" = 18, "adx" = 19, "smap" = 20, "avx512ifma" = 21,
        "clflushopt" = 23, "clwb" = 24, "avx512pf" = 26, "avx512er" = 27, "avx512cd" = 28,
        "sha-ni" = 29, "avx512bw" = 30, "avx512vl" = 31;
    0x7/0 Ecx: "avx512vbmi" = 1, "umip" = 2, "pku" = 3, "waitpkg" = 5, "avx512vbmi2" = 6,
        "gfni" = 8, "vaes" = 9, "vpclmulqdq" = 10, "avx512vnni" = 11, "avx512bitalg" = 12,
        "avx512-vpopcntdq" = 14, "la57" = 16, "rdpid" = 22, "cldemote" = 25, "movdiri" = 27,
        "movdir64b" = 28;
    0x7/0 Edx: "avx512-4vnniw" = 2, "avx512-4fmaps" = 3, "fsrm" = 4, "md-clear" = 10,
        "serialize" = 14, "tsx-ldtrk" = 16, "pconfig" = 18, "arch-lbr" = 19, "amx-bf16" = 22,
        "avx512-fp16" = 23, "amx-tile" = 24, "amx-int8" = 25, "spec-ctrl" = 26, "stibp" = 27,
        "arch-capabilities" = 29, "core-capability" = 30, "ssbd" = 31;
    0xd/1 Eax: "xsaveopt" = 0, "xsavec" = 1, "xgetbv1" = 2, "xsaves" = 3;
    0x4000_0001/0 Eax: "kvmclock" = 0, "kvmclock" = 3, "kvm_nopiodelay" = 1, "kvm_mmu" = 2,
        "kvm_asyncpf" = 4, "kvm_steal_time" = 5, "kvm_pv_eoi" = 6, "kvm_pv_unhalt" = 7,
        "kvm-pv-tlb-flush" = 9, "kvm-asyncpf-vmexit" = 10, "kvm-pv-ipi" = 11,
        "kvm-poll-control" = 12, "kvm-pv-sched-yield" = 13, "kvm-asyncpf-int" = 14,
        "kvm-msi-ext-dest-id" = 15;
    0x8000_0001/0 Ecx: "lahf_lm" = 0, "cmp_legacy" = 1, "svm" = 2, "extapic" = 3,
        "cr8legacy" = 4, "abm" = 5, "sse4a" = 6, "misalignsse" = 7, "3dnowprefetch" = 8,
        "osvw" = 9, "ibs" = 10, "xop" = 11, "skinit" = 12, "wdt" = 13, "lwp" = 15, "fma4" = 16,
        "tce" = 17, "nodeid_msr" = 19, "tbm" = 21, "topoext" = 22, "perfctr_core" = 23,
        "perfctr_nb" = 24;
    0x8000_0001/0 Edx: "syscall" = 11, "nx" = 20, "mmxext" = 22, "fxsr_opt" = 25,
        "pdpe1gb" = 26, "rdtscp" = 27, "lm" = 29, "3dnowext" = 30, "3dnow" = 31;
    0x8000_0007/0 Edx: "invtsc" = 8;
};

/// Canonical form for comparing names: libvirt mixes `_`, `-` and `.` ("sse4.1", "lahf_lm").
fn canonical(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', '.'], "-")
}

/// Looks a feature up by libvirt name (case, `_`, `-` and `.` do not matter). A few names
/// cover more than one bit (`kvmclock` is both KVM clock-source bits); this returns the first.
pub fn feature_by_name(name: &str) -> Option<&'static CpuFeature> {
    features_by_name(name).next()
}

/// Every bit a libvirt feature name stands for.
pub fn features_by_name(name: &str) -> impl Iterator<Item = &'static CpuFeature> {
    let wanted = canonical(name);
    CPU_FEATURES
        .iter()
        .filter(move |f| canonical(f.name) == wanted)
}

/// The features hidden from the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatureMask {
    disabled: Vec<CpuFeature>,
}

impl CpuFeatureMask {
    /// Hides the named features. Fails on the first unknown name.
    pub fn disable<I, S>(names: I) -> Result<Self, CpuidError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut disabled = Vec::new();
        for name in names {
            let before = disabled.len();
            disabled.extend(features_by_name(name.as_ref()).copied());
            if disabled.len() == before {
                return Err(CpuidError::UnknownFeature(name.as_ref().to_string()));
            }
        }
        Ok(CpuFeatureMask { disabled })
    }

    /// The hidden features.
    pub fn disabled(&self) -> &[CpuFeature] {
        &self.disabled
    }

    fn apply(&self, entry: &mut kvm_cpuid_entry2) {
        for f in &self.disabled {
            if f.leaf == entry.function && f.subleaf == entry.index {
                *reg_mut(entry, f.reg) &= !(1u32 << f.bit);
            }
        }
    }
}

fn reg_mut(entry: &mut kvm_cpuid_entry2, reg: CpuidReg) -> &mut u32 {
    match reg {
        CpuidReg::Eax => &mut entry.eax,
        CpuidReg::Ebx => &mut entry.ebx,
        CpuidReg::Ecx => &mut entry.ecx,
        CpuidReg::Edx => &mut entry.edx,
    }
}

const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// The CPUID for vCPU `index` of `topology`: `supported` (from `KVM_GET_SUPPORTED_CPUID`)
/// with the mask applied, the hypervisor bit set, and the topology: the vCPU's APIC ID (leaf 1,
/// leaf 0xB/0x1F), logical processors per package (leaf 1), the SMT and core levels (leaf
/// 0xB/0x1F) and cores per package (leaf 4).
pub fn vcpu_cpuid(
    supported: &CpuId,
    mask: &CpuFeatureMask,
    index: u8,
    topology: &CpuTopology,
) -> CpuId {
    let apic_id = u32::from(topology.apic_id(index));
    let (thread_bits, core_bits) = (topology.thread_bits(), topology.core_bits());
    let per_package = 1u32 << (thread_bits + core_bits);
    let threads = u32::from(topology.threads);
    let cores_threads = u32::from(topology.cores) * threads;
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        mask.apply(entry);
        match entry.function {
            0x1 => {
                entry.ecx |= LEAF1_ECX_HYPERVISOR;
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (per_package.min(255) << 16);
                if per_package > 1 {
                    entry.edx |= LEAF1_EDX_HTT;
                } else {
                    entry.edx &= !LEAF1_EDX_HTT;
                }
            }
            // Deterministic cache parameters: EAX[31:26] = addressable core IDs per package - 1.
            0x4 if entry.eax & 0x1f != 0 => {
                entry.eax = (entry.eax & 0x03ff_ffff) | (((1u32 << core_bits) - 1) << 26);
            }
            // Extended topology: level 0 = SMT, level 1 = core; x2APIC ID in EDX.
            0xb | 0x1f => {
                entry.edx = apic_id;
                match entry.index {
                    0 => {
                        entry.eax = thread_bits;
                        entry.ebx = threads;
                        entry.ecx = 1 << 8;
                    }
                    1 => {
                        entry.eax = thread_bits + core_bits;
                        entry.ebx = cores_threads;
                        entry.ecx = (2 << 8) | 1;
                    }
                    n => {
                        entry.eax = 0;
                        entry.ebx = 0;
                        entry.ecx = n & 0xff;
                    }
                }
            }
            _ => {}
        }
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn supported() -> CpuId {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ecx: 0x7ffa_3203 | (1 << 5),
                edx: 0x1789_fbff,
                ebx: 0x0101_0800,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                index: 0,
                ebx: 0xffff_ffff,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 0,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
        ];
        CpuId::from_entries(&entries).unwrap()
    }

    fn entry(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn names_are_matched_loosely() {
        assert_eq!(feature_by_name("SSE4.1").unwrap().bit, 19);
        assert_eq!(feature_by_name("sse4_1").unwrap().bit, 19);
        assert_eq!(feature_by_name("lahf-lm").unwrap().leaf, 0x8000_0001);
        assert!(feature_by_name("warp-drive").is_none());
        assert_eq!(features_by_name("kvmclock").count(), 2);
    }

    #[test]
    fn unknown_feature_is_an_error_naming_it() {
        let err = CpuFeatureMask::disable(["avx2", "nope"]).unwrap_err();
        assert_eq!(err, CpuidError::UnknownFeature("nope".into()));
        assert!(err.to_string().contains("\"nope\""));
    }

    #[test]
    fn disabled_features_are_cleared() {
        let mask = CpuFeatureMask::disable(["vmx", "avx2"]).unwrap();
        let cpuid = vcpu_cpuid(&supported(), &mask, 0, &CpuTopology::flat(1));
        assert_eq!(entry(&cpuid, 1, 0).ecx & (1 << 5), 0);
        assert_eq!(entry(&cpuid, 7, 0).ebx & (1 << 5), 0);
        assert_eq!(
            entry(&cpuid, 7, 0).ebx & (1 << 4),
            1 << 4,
            "other bits stay"
        );
    }

    #[test]
    fn topology_is_per_vcpu() {
        let cpuid = vcpu_cpuid(
            &supported(),
            &CpuFeatureMask::default(),
            3,
            &CpuTopology::flat(4),
        );
        let leaf1 = entry(&cpuid, 1, 0);
        assert_eq!(leaf1.ebx >> 24, 3);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 4);
        assert_ne!(leaf1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(leaf1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(entry(&cpuid, 0xb, 0).edx, 3);
        assert_eq!(entry(&cpuid, 0xb, 1).ebx, 4);
    }

    #[test]
    fn sockets_cores_and_threads_reach_the_topology_leaves() {
        // 2 sockets x 2 cores x 2 threads; vCPU 5 = socket 1, core 0, thread 1 = APIC ID 5.
        let t = CpuTopology::new(2, 2, 2).unwrap();
        let cpuid = vcpu_cpuid(&supported(), &CpuFeatureMask::default(), 5, &t);
        let leaf1 = entry(&cpuid, 1, 0);
        assert_eq!(leaf1.ebx >> 24, 5);
        assert_eq!(
            (leaf1.ebx >> 16) & 0xff,
            4,
            "logical processors per package"
        );
        let (smt, core) = (entry(&cpuid, 0xb, 0), entry(&cpuid, 0xb, 1));
        assert_eq!(
            (smt.eax, smt.ebx, smt.edx),
            (1, 2, 5),
            "SMT level: 1 bit, 2 threads"
        );
        assert_eq!(
            (core.eax, core.ebx),
            (2, 4),
            "core level: 2 bits, 4 logical per package"
        );
    }

    proptest! {
        #[test]
        fn masking_only_ever_clears_bits(picks in proptest::collection::vec(0..CPU_FEATURES.len(), 0..20)) {
            let names: Vec<&str> = picks.iter().map(|&i| CPU_FEATURES[i].name).collect();
            let mask = CpuFeatureMask::disable(&names).unwrap();
            let base = vcpu_cpuid(&supported(), &CpuFeatureMask::default(), 0, &CpuTopology::flat(1));
            let masked = vcpu_cpuid(&supported(), &mask, 0, &CpuTopology::flat(1));
            for (a, b) in base.as_slice().iter().zip(masked.as_slice()) {
                prop_assert_eq!(b.eax & !a.eax, 0);
                prop_assert_eq!(b.ebx & !a.ebx, 0);
                prop_assert_eq!(b.ecx & !a.ecx, 0);
                prop_assert_eq!(b.edx & !a.edx, 0);
            }
            for f in mask.disabled() {
                if let Some(e) = masked.as_slice().iter().find(|e| e.function == f.leaf && e.index == f.subleaf) {
                    let mut e = *e;
                    prop_assert_eq!(*reg_mut(&mut e, f.reg) & (1 << f.bit), 0);
                }
            }
        }
    }
}
