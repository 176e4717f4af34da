//! The guest's CPU topology: sockets × cores × threads, and the APIC IDs that encode it.
//!
//! As on real x86 hardware (and as Linux decodes CPUID leaf 0xB), an APIC ID is the thread
//! number in the low `thread_bits`, the core number above it in `core_bits`, and the socket
//! above both, each field as wide as its count rounded up to a power of two. vCPU *i* is
//! thread `i % threads` of core `(i / threads) % cores` of socket `i / (threads · cores)`. KVM
//! takes a vCPU's id as its APIC ID, so vCPUs are created with these ids; the MADT, CPUID and
//! SMBIOS all describe the same layout.

/// Errors describing a topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// A count is 0.
    #[error("CPU topology {0}: sockets, cores and threads must each be at least 1")]
    Zero(CpuTopology),
    /// More vCPUs than the VMM runs.
    #[error("CPU topology {0} is {1} vCPUs; at most 255 are supported")]
    TooMany(CpuTopology, u32),
    /// The encoding needs APIC IDs the MADT cannot list (xAPIC IDs are 8 bits, 255 = broadcast).
    #[error(
        "CPU topology {0} needs APIC IDs up to {1}, above 254; use fewer sockets or a power-of-two core count"
    )]
    ApicIdTooLarge(CpuTopology, u32),
}

/// Sockets × cores per socket × threads per core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// Sockets (packages).
    pub sockets: u8,
    /// Cores per socket.
    pub cores: u8,
    /// Threads per core.
    pub threads: u8,
}

impl std::fmt::Display for CpuTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} socket(s) x {} core(s) x {} thread(s)",
            self.sockets, self.cores, self.threads
        )
    }
}

/// Bits needed to number `n` items (0 for 1).
fn bits(n: u8) -> u32 {
    u32::from(n.max(1)).next_power_of_two().trailing_zeros()
}

impl CpuTopology {
    /// One socket whose cores are the `vcpus` vCPUs, one thread each.
    pub fn flat(vcpus: u8) -> Self {
        CpuTopology {
            sockets: 1,
            cores: vcpus,
            threads: 1,
        }
    }

    /// Checks a topology: counts ≥ 1, at most 255 vCPUs, APIC IDs ≤ 254.
    pub fn new(sockets: u8, cores: u8, threads: u8) -> Result<Self, TopologyError> {
        let t = CpuTopology {
            sockets,
            cores,
            threads,
        };
        if sockets == 0 || cores == 0 || threads == 0 {
            return Err(TopologyError::Zero(t));
        }
        let vcpus = u32::from(sockets) * u32::from(cores) * u32::from(threads);
        if vcpus > 255 {
            return Err(TopologyError::TooMany(t, vcpus));
        }
        let max_id = (u32::from(sockets - 1) << (t.core_bits() + t.thread_bits()))
            | (u32::from(cores - 1) << t.thread_bits())
            | u32::from(threads - 1);
        if max_id > 254 {
            return Err(TopologyError::ApicIdTooLarge(t, max_id));
        }
        Ok(t)
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> u8 {
        // `new` bounds the product by 255; `flat` takes a u8.
        (u32::from(self.sockets) * u32::from(self.cores) * u32::from(self.threads)).min(255) as u8
    }

    /// Width of the thread field of an APIC ID.
    pub fn thread_bits(&self) -> u32 {
        bits(self.threads)
    }

    /// Width of the core field.
    pub fn core_bits(&self) -> u32 {
        bits(self.cores)
    }

    /// The APIC ID of vCPU `index`.
    pub fn apic_id(&self, index: u8) -> u8 {
        let (threads, cores) = (u32::from(self.threads.max(1)), u32::from(self.cores.max(1)));
        let i = u32::from(index);
        let thread = i % threads;
        let core = (i / threads) % cores;
        let socket = i / (threads * cores);
        let id = (socket << (self.core_bits() + self.thread_bits()))
            | (core << self.thread_bits())
            | thread;
        id.min(254) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn flat_ids_are_the_indices() {
        let t = CpuTopology::flat(4);
        assert_eq!(
            (0..4).map(|i| t.apic_id(i)).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn fields_round_up_to_powers_of_two() {
        // 2 sockets x 3 cores x 2 threads: thread 1 bit, core 2 bits.
        let t = CpuTopology::new(2, 3, 2).unwrap();
        assert_eq!(t.vcpus(), 12);
        assert_eq!((t.thread_bits(), t.core_bits()), (1, 2));
        let ids: Vec<u8> = (0..12).map(|i| t.apic_id(i)).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
    }

    #[test]
    fn impossible_topologies_are_refused_with_a_reason() {
        assert!(matches!(
            CpuTopology::new(0, 1, 1),
            Err(TopologyError::Zero(_))
        ));
        assert!(matches!(
            CpuTopology::new(16, 16, 2),
            Err(TopologyError::TooMany(..))
        ));
        let e = CpuTopology::new(3, 65, 1).unwrap_err();
        assert!(e.to_string().contains("above 254"), "{e}");
    }

    proptest! {
        /// Every accepted topology gives each vCPU a distinct APIC ID that decodes back to
        /// its (socket, core, thread).
        #[test]
        fn apic_ids_are_distinct_and_decode(s in 1u8..8, c in 1u8..40, t in 1u8..4) {
            let Ok(topo) = CpuTopology::new(s, c, t) else { return Ok(()); };
            let mut seen = std::collections::BTreeSet::new();
            for i in 0..topo.vcpus() {
                let id = u32::from(topo.apic_id(i));
                prop_assert!(seen.insert(id));
                let thread = id & ((1 << topo.thread_bits()) - 1);
                let core = (id >> topo.thread_bits()) & ((1 << topo.core_bits()) - 1);
                let socket = id >> (topo.thread_bits() + topo.core_bits());
                prop_assert_eq!(thread, u32::from(i) % u32::from(t));
                prop_assert_eq!(core, (u32::from(i) / u32::from(t)) % u32::from(c));
                prop_assert_eq!(socket, u32::from(i) / (u32::from(t) * u32::from(c)));
            }
        }
    }
}
