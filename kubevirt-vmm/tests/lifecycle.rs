//! Real vCPUs on /dev/kvm: pause/resume, guest-requested reset and power-off, faults, host stop.

mod common;

use std::time::Duration;

use common::wait;
use kubevirt_vmm::testguest::programs::{
    self, COUNTER_ADDR, COUNTER_BOOTS_ADDR, COUNTER_RELEASE_ADDR,
};
use kubevirt_vmm::testguest::{GUEST_LOAD_ADDR, TestGuest};
use kubevirt_vmm::vm::LifecycleError;
use kubevirt_vmm::{ConsoleBuffer, ConsoleConfig, ExitReason, Vm, VmError, VmState};
use vm_memory::{Bytes, GuestAddress};

fn read_u64(vm: &Vm, addr: u64) -> u64 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    kubevirt_testsupport::eventually_within(common::GUEST_TIMEOUT, what, || cond().then_some(()));
}

fn start(guest: &TestGuest, vcpus: u8) -> Vm {
    let vm = Vm::new(guest.vm_config(vcpus, ConsoleConfig::Sink)).unwrap();
    vm.start().unwrap();
    vm
}

#[test]
fn pause_freezes_the_guest_and_resume_continues_where_it_stopped() {
    let guest = programs::counter().unwrap();
    let vm = start(&guest, 1);
    wait_for("the guest to count", || read_u64(&vm, COUNTER_ADDR) > 1000);

    vm.pause().unwrap();
    assert_eq!(vm.state(), VmState::Paused);
    let paused_at = read_u64(&vm, COUNTER_ADDR);
    let snapshot = vm.vcpu_snapshot(0).expect("registers of a parked vCPU");
    // RCX is the loop counter; the store to memory follows the increment.
    assert!(
        snapshot.regs.rcx == paused_at || snapshot.regs.rcx == paused_at + 1,
        "rcx {} memory {paused_at}",
        snapshot.regs.rcx
    );
    let code = GUEST_LOAD_ADDR..GUEST_LOAD_ADDR + guest.code.len() as u64;
    assert!(
        code.contains(&snapshot.regs.rip),
        "rip {:#x} inside the program",
        snapshot.regs.rip
    );
    assert_eq!(snapshot.sregs.cs.dpl, 3, "still at CPL 3");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        read_u64(&vm, COUNTER_ADDR),
        paused_at,
        "no progress while paused"
    );
    assert_eq!(vm.vcpu_snapshot(0), Some(snapshot));

    vm.resume().unwrap();
    assert_eq!(vm.state(), VmState::Running);
    assert_eq!(vm.vcpu_snapshot(0), None);
    wait_for("progress after resume", || {
        read_u64(&vm, COUNTER_ADDR) > paused_at + 1000
    });

    vm.memory()
        .write_obj(1u64, GuestAddress(COUNTER_RELEASE_ADDR))
        .unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    assert_eq!(
        read_u64(&vm, COUNTER_BOOTS_ADDR),
        1,
        "the guest ran once, it was not restarted"
    );
    assert!(read_u64(&vm, COUNTER_ADDR) > paused_at);
}

#[test]
fn pause_and_resume_many_times_with_two_vcpus() {
    let guest = programs::counter().unwrap();
    let vm = start(&guest, 2);
    let mut last = 0;
    for _ in 0..20 {
        vm.pause().unwrap();
        let now = read_u64(&vm, COUNTER_ADDR);
        assert!(vm.vcpu_snapshot(0).is_some() && vm.vcpu_snapshot(1).is_some());
        last = last.max(now);
        vm.resume().unwrap();
    }
    vm.memory()
        .write_obj(1u64, GuestAddress(COUNTER_RELEASE_ADDR))
        .unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    assert_eq!(
        read_u64(&vm, COUNTER_BOOTS_ADDR),
        2,
        "each vCPU started once"
    );
}

#[test]
fn host_stop_ends_a_running_guest() {
    let vm = start(&programs::counter().unwrap(), 2);
    wait_for("the guest to count", || read_u64(&vm, COUNTER_ADDR) > 0);
    assert_eq!(vm.stop(), ExitReason::Stopped);
    assert_eq!(vm.state(), VmState::Exited);
    assert!(matches!(
        vm.pause(),
        Err(VmError::Lifecycle(LifecycleError::Exited(
            ExitReason::Stopped
        )))
    ));
}

#[test]
fn host_stop_ends_a_paused_guest() {
    let vm = start(&programs::counter().unwrap(), 1);
    vm.pause().unwrap();
    assert_eq!(vm.stop(), ExitReason::Stopped);
}

#[test]
fn dropping_a_running_vm_stops_it() {
    let vm = start(&programs::counter().unwrap(), 2);
    wait_for("the guest to count", || read_u64(&vm, COUNTER_ADDR) > 0);
    drop(vm);
}

#[test]
fn i8042_reset_ends_the_vm_with_reset() {
    let vm = start(&programs::i8042_reset().unwrap(), 1);
    assert_eq!(wait(&vm), ExitReason::Reset);
}

#[test]
fn debug_exit_ends_the_vm_with_the_guest_status() {
    let vm = start(&programs::print_and_exit("status", b"", 0x42).unwrap(), 1);
    let reason = wait(&vm);
    assert_eq!(reason, ExitReason::DebugExit { code: 0x42 });
    assert!(!reason.is_clean());
}

#[test]
fn invalid_opcode_is_reported_as_a_triple_fault_at_the_instruction() {
    let guest = programs::invalid_opcode().unwrap();
    let console = ConsoleBuffer::new();
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Buffer(console.clone()))).unwrap();
    vm.start().unwrap();
    let reason = wait(&vm);
    let ud2 = guest
        .code
        .windows(2)
        .position(|w| w == [0x0f, 0x0b])
        .unwrap() as u64
        + GUEST_LOAD_ADDR;
    assert_eq!(reason, ExitReason::TripleFault { vcpu: 0, rip: ud2 });
    assert!(reason.to_string().contains("triple-faulted"));
    assert_eq!(
        console.text(),
        "about to fault\n",
        "output before the fault is kept"
    );
}

#[test]
fn unmapped_access_is_reported_as_a_triple_fault() {
    let vm = start(&programs::page_fault(1 << 33).unwrap(), 1);
    assert!(matches!(wait(&vm), ExitReason::TripleFault { vcpu: 0, .. }));
}

#[test]
fn start_twice_is_refused() {
    let vm = start(&programs::hello().unwrap(), 1);
    assert!(matches!(
        vm.start(),
        Err(VmError::Lifecycle(LifecycleError::AlreadyStarted))
    ));
    wait(&vm);
}

#[test]
fn pause_before_start_is_refused() {
    let vm = Vm::new(programs::hello().unwrap().vm_config(1, ConsoleConfig::Sink)).unwrap();
    assert!(matches!(
        vm.pause(),
        Err(VmError::Lifecycle(LifecycleError::NotStarted))
    ));
}

#[test]
fn invalid_configs_say_what_is_wrong() {
    let guest = programs::hello().unwrap();
    let mut config = guest.vm_config(0, ConsoleConfig::Sink);
    let err = Vm::new(config).unwrap_err();
    assert!(err.to_string().contains("0 vCPUs requested"), "{err}");
    config = guest.vm_config(1, ConsoleConfig::Sink);
    config.memory_size = 12345;
    let err = Vm::new(config).unwrap_err();
    assert!(err.to_string().contains("0x3039"), "{err}");
    let config = guest.vm_config(
        1,
        ConsoleConfig::File("/nonexistent-dir/console.log".into()),
    );
    let err = Vm::new(config).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir/console.log"),
        "{err}"
    );
}
