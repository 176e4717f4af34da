//! MSI-X through irqfd and GSI routing, proven without the guest taking an interrupt.
//!
//! The guest is the CPL 3 `counter` loop, which runs with RFLAGS.IF = 0: an interrupt the
//! in-kernel LAPIC accepts stays requested in its IRR, where `KVM_GET_LAPIC` (taken when the
//! vCPU parks for a pause, [`kubevirt_vmm::VcpuSnapshot::lapic`]) shows it. The host plays the
//! driver through the VM's own buses — ECAM config writes for the MSI-X enable bit, BAR 0
//! writes for the common configuration and the MSI-X table, exactly the accesses a guest
//! driver's MMIO exits would make — and the device raises its queue interrupt through the
//! transport's `VirtioInterrupt`, i.e. by writing the vector's irqfd.

mod common;

use std::sync::{Arc, Mutex};

use kubevirt_vmm::arch::lapic;
use kubevirt_vmm::pci::PCI_MMCONFIG_START;
use kubevirt_vmm::pci::msix::MsiMessage;
use kubevirt_vmm::testguest::programs;
use kubevirt_vmm::virtio::device::{
    ActivateContext, ActivateError, VirtioDevice, VirtioInterrupt, VirtioInterruptType,
};
use kubevirt_vmm::virtio::pci::{MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET};
use kubevirt_vmm::{ConsoleConfig, Vm, VmState};

type Slot = Arc<Mutex<Option<Arc<dyn VirtioInterrupt>>>>;

/// A one-queue device that hands its interrupt to the test when activated.
struct Doorbell {
    slot: Slot,
}

impl VirtioDevice for Doorbell {
    fn device_type(&self) -> u32 {
        4
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16]
    }
    fn features(&self) -> u64 {
        0
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError> {
        *self.slot.lock().unwrap() = Some(context.interrupt);
        Ok(())
    }
    fn reset(&mut self) {
        *self.slot.lock().unwrap() = None;
    }
}

/// The device's slot (0 and 1 are the chipset's).
const SLOT: u64 = 2;
const VECTOR_A: u8 = 0x41;
const VECTOR_B: u8 = 0x52;
const VECTOR_C: u8 = 0x63;

fn ecam(reg: u64) -> u64 {
    PCI_MMCONFIG_START + (SLOT << 15) + reg
}

struct Driver<'a> {
    vm: &'a Vm,
    bar0: u64,
}

impl Driver<'_> {
    fn new(vm: &Vm) -> Driver<'_> {
        let mut lo = [0u8; 4];
        let mut hi = [0u8; 4];
        vm.buses().mmio.read(ecam(0x10), &mut lo);
        vm.buses().mmio.read(ecam(0x14), &mut hi);
        let bar0 =
            (u64::from(u32::from_le_bytes(hi)) << 32) | u64::from(u32::from_le_bytes(lo) & !0xf);
        assert_ne!(bar0, 0, "the VMM placed BAR 0");
        Driver { vm, bar0 }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.vm.buses().mmio.write(self.bar0 + offset, data);
    }

    fn pba(&self) -> u8 {
        let mut b = [0u8; 1];
        self.vm
            .buses()
            .mmio
            .read(self.bar0 + MSIX_PBA_OFFSET, &mut b);
        b[0]
    }

    /// Writes table entry `entry`: fixed delivery of `vector` to APIC 0, masked or not.
    fn program(&self, entry: u64, vector: u8, masked: bool) {
        let base = MSIX_TABLE_OFFSET + 16 * entry;
        self.write(base, &0xfee0_0000u64.to_le_bytes());
        self.write(base + 8, &u32::from(vector).to_le_bytes());
        self.set_masked(entry, masked);
    }

    fn set_masked(&self, entry: u64, masked: bool) {
        let base = MSIX_TABLE_OFFSET + 16 * entry;
        self.write(base + 12, &u32::from(masked).to_le_bytes());
    }

    /// Finds the MSI-X capability and sets its enable bit.
    fn enable_msix(&self) {
        let mut b = [0u8; 1];
        self.vm.buses().mmio.read(ecam(0x34), &mut b);
        let mut cap = u64::from(b[0]);
        loop {
            assert_ne!(cap, 0, "an MSI-X capability");
            let mut hdr = [0u8; 2];
            self.vm.buses().mmio.read(ecam(cap), &mut hdr);
            if hdr[0] == 0x11 {
                break;
            }
            cap = u64::from(hdr[1]);
        }
        self.vm
            .buses()
            .mmio
            .write(ecam(cap + 2), &0x8000u16.to_le_bytes());
    }

    /// Common configuration: queue 0 gets MSI-X entry `entry`, then the driver goes live.
    fn activate(&self, entry: u16) {
        self.write(0x14, &[1 | 2]); // ACKNOWLEDGE | DRIVER
        self.write(0x08, &1u32.to_le_bytes()); // driver_feature_select = 1
        self.write(0x0c, &1u32.to_le_bytes()); // VIRTIO_F_VERSION_1
        self.write(0x14, &[1 | 2 | 8]); // FEATURES_OK
        self.write(0x16, &0u16.to_le_bytes()); // queue_select = 0
        self.write(0x1a, &entry.to_le_bytes()); // queue_msix_vector
        self.write(0x14, &[1 | 2 | 8 | 4]); // DRIVER_OK
    }
}

/// Pauses the VM and returns vCPU 0's LAPIC, then lets it run on.
fn lapic_now(vm: &Vm) -> kvm_bindings::kvm_lapic_state {
    vm.pause().unwrap();
    let snap = vm.vcpu_snapshot(0).expect("a paused vCPU has a snapshot");
    assert_eq!(snap.regs.rflags & 0x200, 0, "the guest runs with IF = 0");
    assert_eq!(snap.sregs.cs.selector & 3, 3, "the guest runs at CPL 3");
    vm.resume().unwrap();
    snap.lapic
}

#[test]
fn msix_vectors_reach_the_lapic_irr_through_irqfd_routes() {
    let slot: Slot = Arc::default();
    let guest = programs::counter().unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .virtio_device(Box::new(Doorbell { slot: slot.clone() }))
        .build()
        .unwrap();
    // The guest never enables its LAPIC (that needs CPL 0 or an APIC mapping): do it for it.
    let mut state = vm.vcpu_lapic(0).unwrap();
    lapic::software_enable(&mut state);
    vm.set_vcpu_lapic(0, &state).unwrap();
    vm.start().unwrap();

    let driver = Driver::new(&vm);
    driver.activate(0);
    let interrupt = slot
        .lock()
        .unwrap()
        .clone()
        .expect("DRIVER_OK activated the device");
    driver.program(0, VECTOR_A, true);
    driver.enable_msix();
    assert!(
        vm.gsi_routing().msi_routes().is_empty(),
        "no route for a masked vector"
    );

    // Masked: the device's interrupt sets the pending bit and reaches no LAPIC.
    interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    assert_eq!(driver.pba() & 1, 1, "PBA bit of the masked vector");
    let l = lapic_now(&vm);
    assert!(
        !lapic::irr_bit(&l, VECTOR_A),
        "masked vector must not be delivered"
    );

    // Unmask: the route is installed and the pending interrupt delivered.
    driver.set_masked(0, false);
    let routes = vm.gsi_routing().msi_routes();
    assert_eq!(
        routes,
        vec![(
            24,
            MsiMessage {
                address: 0xfee0_0000,
                data: u32::from(VECTOR_A)
            }
        )]
    );
    assert_eq!(driver.pba() & 1, 0, "pending bit cleared on unmask");
    let l = lapic_now(&vm);
    assert!(
        lapic::irr_bit(&l, VECTOR_A),
        "pending vector delivered on unmask"
    );

    // Reprogram the vector (masked while rewriting, as drivers do): the route follows.
    driver.program(0, VECTOR_B, true);
    driver.set_masked(0, false);
    assert_eq!(
        vm.gsi_routing().msi_routes(),
        vec![(
            24,
            MsiMessage {
                address: 0xfee0_0000,
                data: u32::from(VECTOR_B)
            }
        )],
        "same GSI, new message"
    );
    let l = lapic_now(&vm);
    assert!(!lapic::irr_bit(&l, VECTOR_B), "nothing raised yet");
    interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    let l = lapic_now(&vm);
    assert!(
        lapic::irr_bit(&l, VECTOR_B),
        "the device's irqfd write reached the LAPIC"
    );

    // A second vector (configuration changes) gets its own GSI.
    driver.write(0x10, &1u16.to_le_bytes()); // msix_config = entry 1
    driver.program(1, VECTOR_C, false);
    assert_eq!(vm.gsi_routing().msi_routes().len(), 2);
    interrupt.trigger(VirtioInterruptType::Config).unwrap();
    let l = lapic_now(&vm);
    assert!(lapic::irr_bit(&l, VECTOR_C));

    assert_eq!(vm.state(), VmState::Running);
    vm.stop();
}

/// Host-side cost of raising one MSI-X interrupt, irqfd route against `KVM_SIGNAL_MSI`, on the
/// same VM and vector (the guest spins with IF = 0, so each raise only sets the IRR bit).
/// Run: `cargo test --release -p kubevirt-vmm --test msix_irqfd -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn measure_irqfd_against_signal_msi() {
    const N: u32 = 200_000;
    let slot: Slot = Arc::default();
    let guest = programs::counter().unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .virtio_device(Box::new(Doorbell { slot: slot.clone() }))
        .build()
        .unwrap();
    let mut state = vm.vcpu_lapic(0).unwrap();
    lapic::software_enable(&mut state);
    vm.set_vcpu_lapic(0, &state).unwrap();
    vm.start().unwrap();
    let driver = Driver::new(&vm);
    driver.activate(0);
    driver.program(0, VECTOR_A, false);
    driver.enable_msix();
    let interrupt = slot.lock().unwrap().clone().unwrap();
    let msi = kvm_bindings::kvm_msi {
        address_lo: 0xfee0_0000,
        data: u32::from(VECTOR_A),
        ..Default::default()
    };
    for round in 0..3 {
        let t = std::time::Instant::now();
        for _ in 0..N {
            interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
        }
        let irqfd = t.elapsed() / N;
        let t = std::time::Instant::now();
        for _ in 0..N {
            vm.vm_fd().signal_msi(msi).unwrap();
        }
        let ioctl = t.elapsed() / N;
        // The transport's own share: the same trigger on a masked vector stops at the PBA.
        driver.set_masked(0, true);
        let t = std::time::Instant::now();
        for _ in 0..N {
            interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
        }
        let masked = t.elapsed() / N;
        driver.set_masked(0, false);
        println!(
            "round {round}: VirtioInterrupt::trigger via irqfd {irqfd:?}, bare KVM_SIGNAL_MSI {ioctl:?}, trigger on a masked vector {masked:?} per interrupt"
        );
    }
    assert!(lapic::irr_bit(&lapic_now(&vm), VECTOR_A));
    vm.stop();
}
