//! Real vCPUs: a CPL 3 guest finds the RSDP where the VMM wrote it and powers off through the
//! FADT's sleep-control register, as a kernel's ACPI S5 does.

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
