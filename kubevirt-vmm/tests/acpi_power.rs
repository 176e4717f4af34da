//! Real vCPUs: a CPL 3 guest finds the RSDP where the VMM wrote it and powers off through the
//! FADT's sleep-control register, as a kernel's ACPI S5 does; and the ACPI power button (the
//! Generic Event Device's register) tells a polling guest to do so.

mod common;

use common::wait;
use kubevirt_vmm::acpi::RSDP_ADDR;
use kubevirt_vmm::testguest::programs;
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};

#[test]
fn guest_finds_the_rsdp_and_acpi_s5_powers_off() {
    let guest = programs::acpi_poweroff(RSDP_ADDR).unwrap();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Sink)).unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::PowerOff);
}

#[test]
fn without_acpi_there_is_no_rsdp_and_no_sleep_register() {
    let guest = programs::acpi_poweroff(RSDP_ADDR).unwrap();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Sink).without_acpi()).unwrap();
    vm.start().unwrap();
    // No "RSD PTR " signature: the guest reports it with exit code 2.
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 2 });
}

/// The power button, as a guest that takes no interrupts sees it: the GED event register
/// reads 0 while nobody pressed, then the power-button bit once the host presses; the guest
/// answers with ACPI S5.
#[test]
fn a_polling_guest_sees_the_power_button_and_powers_off() {
    use kubevirt_vmm::acpi::ged::{GED_EVENT_POWER_BUTTON, GED_MMIO_ADDR};
    use kubevirt_vmm::testguest::programs::{POWER_BUTTON_EVENTS, POWER_BUTTON_POLLS};
    use std::time::{Duration, Instant};
    use vm_memory::{Bytes, GuestAddress};

    let guest = programs::power_button_poll(GED_MMIO_ADDR, RSDP_ADDR).unwrap();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Sink)).unwrap();
    vm.start().unwrap();
    let polls = |vm: &Vm| -> u64 {
        vm.memory()
            .read_obj(GuestAddress(POWER_BUTTON_POLLS))
            .unwrap()
    };
    let start = Instant::now();
    while polls(&vm) < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the guest never started polling"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(vm.exit_reason(), None, "no press, no power-off");
    // From another thread, as the launcher's control loop would.
    let button = vm.power_button().expect("ACPI VMs have a power button");
    std::thread::spawn(move || button.press_power_button().unwrap())
        .join()
        .unwrap();
    assert_eq!(wait(&vm), ExitReason::PowerOff);
    let seen: u32 = vm
        .memory()
        .read_obj(GuestAddress(POWER_BUTTON_EVENTS))
        .unwrap();
    assert_eq!(seen, GED_EVENT_POWER_BUTTON);
}

#[test]
fn without_acpi_there_is_no_power_button() {
    let guest = programs::hello().unwrap();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Sink).without_acpi()).unwrap();
    let err = vm.press_power_button().unwrap_err();
    assert!(err.to_string().contains("without ACPI"), "{err}");
    assert!(vm.power_button().is_none());
}
