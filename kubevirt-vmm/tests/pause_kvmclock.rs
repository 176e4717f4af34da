//! kvmclock stands still while the VM is paused (as QEMU keeps it): after a pause of a second,
//! the clock the guest reads (`KVM_GET_CLOCK`) has advanced by far less than the pause, while
//! it runs with host time when the VM is not paused.

mod common;

use std::time::{Duration, Instant};

use kubevirt_vmm::testguest::programs::{self, COUNTER_ADDR};
use kubevirt_vmm::{ConsoleConfig, Vm};
use vm_memory::{Bytes, GuestAddress};

fn clock_ns(vm: &Vm) -> u64 {
    vm.vm_fd().get_clock().expect("KVM_GET_CLOCK").clock
}

#[test]
fn a_paused_vm_s_kvmclock_does_not_jump_by_the_pause() {
    let guest = programs::counter().unwrap();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Sink)).unwrap();
    vm.start().unwrap();
    kubevirt_testsupport::eventually_within(common::GUEST_TIMEOUT, "the guest to count", || {
        (vm.memory()
            .read_obj::<u64>(GuestAddress(COUNTER_ADDR))
            .unwrap()
            > 1000)
            .then_some(())
    });
    // Some hosts' KVM (KVM-on-PVM) may refuse KVM_SET_CLOCK: then the clock cannot be held.
    let now = vm.vm_fd().get_clock().expect("KVM_GET_CLOCK");
    let probe = kvm_bindings::kvm_clock_data {
        clock: now.clock,
        ..Default::default()
    };
    if let Err(e) = vm.vm_fd().set_clock(&probe) {
        eprintln!("skipped: this host's KVM refuses KVM_SET_CLOCK ({e})");
        return;
    }

    // Running, the clock follows host time.
    let (c0, t0) = (clock_ns(&vm), Instant::now());
    std::thread::sleep(Duration::from_millis(300));
    let (ran, took) = (clock_ns(&vm) - c0, t0.elapsed());
    assert!(
        ran >= 250_000_000 && ran <= took.as_nanos() as u64 + 50_000_000,
        "running: kvmclock advanced {ran} ns in {took:?}"
    );

    // Paused for a second, it stands still.
    let (c1, t1) = (clock_ns(&vm), Instant::now());
    vm.pause().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    vm.resume().unwrap();
    let (across, took) = (clock_ns(&vm) - c1, t1.elapsed());
    assert!(took >= Duration::from_secs(1));
    assert!(
        across < 200_000_000,
        "kvmclock advanced {across} ns across a pause of {took:?}"
    );
    eprintln!("kvmclock advanced {across} ns across {took:?} (of which 1 s paused)");

    // And it runs on afterwards.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        clock_ns(&vm) - c1 >= across + 150_000_000,
        "runs after resume"
    );
    // Paused twice in a row, resumed once: the first pause's value holds.
    let c2 = clock_ns(&vm);
    vm.pause().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    vm.pause().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    vm.resume().unwrap();
    let twice = clock_ns(&vm) - c2;
    assert!(
        twice < 200_000_000,
        "kvmclock advanced {twice} ns across two pauses"
    );
    vm.stop();
}
