//! Shared by the VMM benchmarks: a "raw" peer that runs the same test guest on bare
//! kvm-ioctls (same memory, same register setup, no bus, no threads, no lifecycle), and a
//! port device that timestamps guest writes.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubevirt_vmm::arch::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};
use kubevirt_vmm::arch::paging::PageAccess;
use kubevirt_vmm::arch::regs::{EntryMode, EntryState, Privilege};
use kubevirt_vmm::arch::{configure_vcpu, cpuid, write_boot_tables};
use kubevirt_vmm::memory::{MemoryOptions, create_guest_memory, register_guest_memory};
use kubevirt_vmm::testguest::{
    DEBUG_EXIT_PORT, GUEST_LOAD_ADDR, GUEST_MEMORY_SIZE, GUEST_STACK_TOP, TestGuest,
};
use kubevirt_vmm::{BusDevice, CpuFeatureMask};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VcpuExit};
use vm_memory::{Bytes, GuestAddress};

/// The port the benchmark guests write to.
pub const BENCH_PORT: u16 = 0x80;

/// Records when the 1st and the `last`-th write arrived.
#[derive(Debug)]
pub struct Stamp {
    pub count: u64,
    pub last: u64,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
}

impl Stamp {
    pub fn shared(last: u64) -> Arc<Mutex<Stamp>> {
        Arc::new(Mutex::new(Stamp {
            count: 0,
            last,
            first_at: None,
            last_at: None,
        }))
    }

    pub fn hit(&mut self) {
        self.count += 1;
        let now = Instant::now();
        if self.count == 1 {
            self.first_at = Some(now);
        }
        if self.count == self.last {
            self.last_at = Some(now);
        }
    }

    pub fn span(&self) -> Duration {
        match (self.first_at, self.last_at) {
            (Some(a), Some(b)) => b - a,
            _ => panic!("guest wrote {} of {} times", self.count, self.last),
        }
    }
}

impl BusDevice for Stamp {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {
        self.hit();
    }
}

/// Runs `guest` on bare kvm-ioctls, one vCPU on this thread, feeding writes to `BENCH_PORT`
/// into `stamp` with a plain `match`, until the guest writes the debug-exit port.
/// Returns when the first write to `BENCH_PORT` arrived, measured from the start of the call.
pub fn run_raw(guest: &TestGuest, stamp: &mut Stamp) -> Duration {
    let start = Instant::now();
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    // Same order as the VMM: RAM before the irqchip (much cheaper on some hosts).
    let mem =
        create_guest_memory(GUEST_MEMORY_SIZE, MemoryOptions::default()).expect("guest memory");
    register_guest_memory(&vm, &mem).expect("memslots");
    vm.set_tss_address(KVM_TSS_ADDRESS as usize)
        .expect("KVM_SET_TSS_ADDR");
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
        .expect("KVM_SET_IDENTITY_MAP_ADDR");
    vm.create_irq_chip().expect("KVM_CREATE_IRQCHIP");
    mem.write_slice(&guest.code, GuestAddress(GUEST_LOAD_ADDR))
        .expect("load guest");
    write_boot_tables(&mem, PageAccess::User, GUEST_STACK_TOP).expect("boot tables");
    let mut vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .expect("cpuid");
    let cpuid = cpuid::vcpu_cpuid(
        &supported,
        &CpuFeatureMask::default(),
        0,
        &kubevirt_vmm::CpuTopology::flat(1),
    );
    let entry = EntryState::new(
        EntryMode::Long64(Privilege::User),
        guest.entry,
        GUEST_STACK_TOP,
    );
    configure_vcpu(&vcpu, &cpuid, Some(&entry)).expect("configure vCPU");
    let mut first = None;
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(BENCH_PORT, _)) => {
                stamp.hit();
                first.get_or_insert_with(|| start.elapsed());
            }
            Ok(VcpuExit::IoOut(DEBUG_EXIT_PORT, _)) => break,
            Ok(VcpuExit::Intr) => {}
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            other => panic!("raw peer: unexpected exit {other:?}"),
        }
    }
    first.expect("the guest never wrote the bench port")
}

/// Median of `v` (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
