//! Memory-state snapshots on real vCPUs: a counting guest is paused, saved, and restored in a
//! new process, where it counts on from where it was (no second boot); damaged or mismatched
//! snapshots are refused with errors that say what is wrong, and nothing runs.

mod common;

use std::path::Path;
use std::time::Instant;

use common::{Recorder, wait};
use kubevirt_vmm::arch::lapic;
use kubevirt_vmm::snapshot::{FORMAT_VERSION, MEMORY_FILE, STATE_FILE};
use kubevirt_vmm::testguest::programs::{
    self, COUNTER_ADDR, COUNTER_BOOTS_ADDR, COUNTER_RELEASE_ADDR,
};
use kubevirt_vmm::testguest::{GUEST_LOAD_ADDR, REPORT_PORT, TestGuest};
use kubevirt_vmm::virtio::rng::Rng;
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm, VmState};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::tempdir::TempDir;

/// Set in the child process: the snapshot directory to restore.
const CHILD_DIR_ENV: &str = "KUBEVIRT_VMM_SNAPSHOT_DIR";
/// Set in the child process: the counter value the parent saw when it paused.
const CHILD_PAUSED_AT_ENV: &str = "KUBEVIRT_VMM_SNAPSHOT_PAUSED_AT";

fn read_u64(vm: &Vm, addr: u64) -> u64 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    kubevirt_testsupport::eventually_within(common::GUEST_TIMEOUT, what, || cond().then_some(()));
}

fn counter() -> TestGuest {
    programs::counter().unwrap()
}

/// Runs the counter until it passed 1000, pauses it and saves it to `dir`; returns the VM
/// (still paused) and the count it paused at.
fn counting_vm_saved_to(dir: &Path) -> (Vm, u64) {
    let vm = Vm::new(counter().vm_config(1, ConsoleConfig::Sink)).unwrap();
    vm.start().unwrap();
    wait_for("the guest to count", || read_u64(&vm, COUNTER_ADDR) > 1000);
    vm.pause().unwrap();
    let paused_at = read_u64(&vm, COUNTER_ADDR);
    let info = vm.snapshot(dir).unwrap();
    assert_eq!(info.memory_size, counter_memory_size());
    assert!(
        info.memory_bytes_written < info.memory_size / 4,
        "zero pages are holes: {info:?}"
    );
    assert_eq!(
        vm.state(),
        VmState::Paused,
        "a snapshot leaves the VM paused"
    );
    (vm, paused_at)
}

fn counter_memory_size() -> u64 {
    counter().vm_config(1, ConsoleConfig::Sink).memory_size
}

fn restore_error(dir: &Path) -> String {
    match Vm::restore(counter().vm_config(1, ConsoleConfig::Sink), dir) {
        Ok(vm) => panic!("restore succeeded (state {:?})", vm.state()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_restored_guest_continues_in_a_new_process_without_booting_again() {
    let dir = TempDir::new().unwrap();
    let (vm, paused_at) = counting_vm_saved_to(dir.as_path());
    drop(vm);

    let paused = paused_at.to_string();
    let stdout = common::run_child_test(
        "restored_guest_child",
        &[
            (CHILD_DIR_ENV, dir.as_path().as_os_str()),
            (CHILD_PAUSED_AT_ENV, paused.as_ref()),
        ],
    );
    // libtest prints the test's name on the same line, before the test's own output.
    let line = stdout
        .lines()
        .find_map(|l| l.find("RESTORED ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("child printed no result:\n{stdout}"));
    println!("paused at {paused_at}; child: {line}");
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    assert_eq!(
        field("at_restore"),
        paused_at,
        "RAM came back as it was saved"
    );
    assert!(field("final") > paused_at + 1000, "the guest counted on");
    assert_eq!(field("boots"), 1, "the guest did not boot again");
}

/// The child half of the test above: restores the snapshot the parent took and runs it.
#[test]
#[ignore = "run in a child process by a_restored_guest_continues_in_a_new_process_without_booting_again"]
fn restored_guest_child() {
    let dir = std::env::var(CHILD_DIR_ENV).expect("run by the parent test only");
    let paused_at: u64 = std::env::var(CHILD_PAUSED_AT_ENV).unwrap().parse().unwrap();
    let t0 = Instant::now();
    let vm = Vm::restore(counter().vm_config(1, ConsoleConfig::Sink), dir.as_ref()).unwrap();
    let built = t0.elapsed();
    assert_eq!(vm.state(), VmState::Created);
    let at_restore = read_u64(&vm, COUNTER_ADDR);
    assert_eq!(read_u64(&vm, COUNTER_BOOTS_ADDR), 1);
    vm.start().unwrap();
    let mut first_seen = None;
    wait_for("the restored guest to count on", || {
        let now = read_u64(&vm, COUNTER_ADDR);
        first_seen.get_or_insert(now);
        now > paused_at + 1000
    });
    vm.memory()
        .write_obj(1u64, GuestAddress(COUNTER_RELEASE_ADDR))
        .unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    println!(
        "RESTORED at_restore={at_restore} first_seen={} final={} boots={} restore_us={}",
        first_seen.unwrap_or(0),
        read_u64(&vm, COUNTER_ADDR),
        read_u64(&vm, COUNTER_BOOTS_ADDR),
        built.as_micros()
    );
}

#[test]
fn the_original_vm_resumes_after_a_snapshot() {
    let dir = TempDir::new().unwrap();
    let (vm, paused_at) = counting_vm_saved_to(dir.as_path());
    // A second snapshot into the same directory replaces the first.
    vm.snapshot(dir.as_path()).unwrap();
    vm.resume().unwrap();
    wait_for("progress after the snapshot", || {
        read_u64(&vm, COUNTER_ADDR) > paused_at + 1000
    });
    vm.memory()
        .write_obj(1u64, GuestAddress(COUNTER_RELEASE_ADDR))
        .unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
}

#[test]
fn a_running_vm_is_not_snapshotted() {
    let dir = TempDir::new().unwrap();
    let vm = Vm::new(counter().vm_config(1, ConsoleConfig::Sink)).unwrap();
    let err = vm.snapshot(dir.as_path()).unwrap_err().to_string();
    assert!(err.contains("Created") && err.contains("pause it"), "{err}");
    vm.start().unwrap();
    let err = vm.snapshot(dir.as_path()).unwrap_err().to_string();
    assert!(err.contains("Running") && err.contains("pause it"), "{err}");
    assert!(!dir.as_path().join(STATE_FILE).exists());
    vm.stop();
}

#[test]
fn a_truncated_memory_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let (_vm, _) = counting_vm_saved_to(dir.as_path());
    let memory = dir.as_path().join(MEMORY_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&memory)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let err = restore_error(dir.as_path());
    assert!(
        err.contains("truncated") && err.contains(&format!("{} bytes", 1 << 20)),
        "{err}"
    );
}

#[test]
fn a_memory_file_of_another_snapshot_is_refused() {
    let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let (vm, _) = counting_vm_saved_to(a.as_path());
    // The same paused VM saved again: same size, same contents, another snapshot.
    vm.snapshot(b.as_path()).unwrap();
    std::fs::copy(b.as_path().join(MEMORY_FILE), a.as_path().join(MEMORY_FILE)).unwrap();
    let err = restore_error(a.as_path());
    assert!(
        err.contains("belongs to snapshot")
            && err.contains("keep a snapshot's state and memory files together"),
        "{err}"
    );
    Vm::restore(counter().vm_config(1, ConsoleConfig::Sink), b.as_path()).unwrap();
}

#[test]
fn another_format_version_is_refused_naming_both_versions() {
    let dir = TempDir::new().unwrap();
    let (_vm, _) = counting_vm_saved_to(dir.as_path());
    let path = dir.as_path().join(STATE_FILE);
    let mut state = std::fs::read(&path).unwrap();
    let other = FORMAT_VERSION + 1;
    state[8..12].copy_from_slice(&other.to_le_bytes());
    std::fs::write(&path, state).unwrap();
    let err = restore_error(dir.as_path());
    assert!(
        err.contains(&format!("version {other}"))
            && err.contains(&format!("version {FORMAT_VERSION}")),
        "{err}"
    );
}

#[test]
fn a_corrupt_or_truncated_state_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let (_vm, _) = counting_vm_saved_to(dir.as_path());
    let path = dir.as_path().join(STATE_FILE);
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x04;
    std::fs::write(&path, &flipped).unwrap();
    let err = restore_error(dir.as_path());
    assert!(err.contains("CRC-32") && err.contains("corrupt"), "{err}");

    std::fs::write(&path, &good[..good.len() - 100]).unwrap();
    let err = restore_error(dir.as_path());
    assert!(err.contains("truncated"), "{err}");

    std::fs::remove_file(&path).unwrap();
    let err = restore_error(dir.as_path());
    assert!(err.contains(STATE_FILE), "{err}");
}

#[test]
fn a_different_configuration_or_device_list_is_refused() {
    let dir = TempDir::new().unwrap();
    let (_vm, _) = counting_vm_saved_to(dir.as_path());
    let err = Vm::restore(counter().vm_config(2, ConsoleConfig::Sink), dir.as_path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1-vCPU") && err.contains("asks for 2"),
        "{err}"
    );

    let mut config = counter().vm_config(1, ConsoleConfig::Sink);
    config.memory_size *= 2;
    let err = Vm::restore(config, dir.as_path()).unwrap_err().to_string();
    assert!(err.contains("RAM"), "{err}");

    let extra = Recorder::shared(0);
    let err = Vm::builder(counter().vm_config(1, ConsoleConfig::Sink))
        .pio_device(REPORT_PORT, 4, extra)
        .restore(dir.as_path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("common::Recorder") && err.contains("0x500") && err.contains("no such"),
        "{err}"
    );

    let config = counter().vm_config(1, ConsoleConfig::Sink).without_acpi();
    let err = Vm::restore(config, dir.as_path()).unwrap_err().to_string();
    assert!(err.contains("acpi-power"), "{err}");
}

#[test]
fn a_vm_with_an_idle_virtio_device_is_restored_only_with_that_device() {
    let dir = TempDir::new().unwrap();
    let with_rng = || {
        Vm::builder(counter().vm_config(1, ConsoleConfig::Sink)).virtio_device(Box::new(Rng::new()))
    };
    let vm = with_rng().build().unwrap();
    vm.start().unwrap();
    wait_for("the guest to count", || read_u64(&vm, COUNTER_ADDR) > 0);
    vm.pause().unwrap();
    vm.snapshot(dir.as_path()).unwrap();
    let paused_at = read_u64(&vm, COUNTER_ADDR);
    vm.stop();

    // Without the device its PCI slot is empty (the chipset's are there), and the restore
    // says so.
    let text = restore_error(dir.as_path());
    assert!(
        text.contains("pci-config-io")
            && text.contains("PCI function 02.0 is used in the snapshot and empty in this VM"),
        "{text}"
    );
    let restored = with_rng().restore(dir.as_path()).unwrap();
    assert_eq!(read_u64(&restored, COUNTER_ADDR), paused_at);
    restored.start().unwrap();
    wait_for("the restored guest to count on", || {
        read_u64(&restored, COUNTER_ADDR) > paused_at + 1000
    });
    restored
        .memory()
        .write_obj(1u64, GuestAddress(COUNTER_RELEASE_ADDR))
        .unwrap();
    assert_eq!(wait(&restored), ExitReason::DebugExit { code: 0 });
}

#[test]
fn serial_state_survives_a_restore() {
    // Host input the guest has not read yet sits in COM1's receive FIFO: it is part of the
    // UART's saved state and must be there after a restore.
    let dir = TempDir::new().unwrap();
    let vm = Vm::new(counter().vm_config(1, ConsoleConfig::Sink)).unwrap();
    vm.start().unwrap();
    wait_for("the guest to count", || read_u64(&vm, COUNTER_ADDR) > 0);
    assert_eq!(vm.serial_input(b"queued"), 6);
    vm.pause().unwrap();
    vm.snapshot(dir.as_path()).unwrap();
    vm.stop();
    let restored = Vm::restore(counter().vm_config(1, ConsoleConfig::Sink), dir.as_path()).unwrap();
    assert_eq!(
        restored.serial_input(&[0; 64]),
        64 - 6,
        "the six queued bytes are in the restored FIFO"
    );
}

#[test]
fn a_pending_interrupt_and_the_lapic_survive_a_restore() {
    // The counter runs with RFLAGS.IF = 0: an MSI the LAPIC accepts stays requested in its IRR,
    // which is part of the vCPU's saved LAPIC page.
    const VECTOR: u8 = 0x41;
    let dir = TempDir::new().unwrap();
    let vm = Vm::new(counter().vm_config(1, ConsoleConfig::Sink)).unwrap();
    let mut state = vm.vcpu_lapic(0).unwrap();
    lapic::software_enable(&mut state);
    vm.set_vcpu_lapic(0, &state).unwrap();
    vm.start().unwrap();
    wait_for("the guest to count", || read_u64(&vm, COUNTER_ADDR) > 0);
    vm.pause().unwrap();
    let msi = kvm_bindings::kvm_msi {
        address_lo: 0xfee0_0000,
        data: u32::from(VECTOR),
        ..Default::default()
    };
    assert_eq!(vm.vm_fd().signal_msi(msi).unwrap(), 1, "delivered");
    vm.snapshot(dir.as_path()).unwrap();
    vm.stop();

    let restored = Vm::restore(counter().vm_config(1, ConsoleConfig::Sink), dir.as_path()).unwrap();
    let lapic_before_start = restored.vcpu_lapic(0).unwrap();
    assert!(lapic::irr_bit(&lapic_before_start, VECTOR), "IRR restored");
    restored.start().unwrap();
    let at = read_u64(&restored, COUNTER_ADDR);
    wait_for("the restored guest to count", || {
        read_u64(&restored, COUNTER_ADDR) > at + 1000
    });
    restored.pause().unwrap();
    let parked = restored.vcpu_snapshot(0).unwrap();
    assert!(lapic::irr_bit(&parked.lapic, VECTOR), "still pending");
    assert_eq!(parked.sregs.cs.dpl, 3, "still at CPL 3");
    restored.stop();
}

#[test]
fn a_two_vcpu_guest_is_restored_with_both_vcpus_where_they_were() {
    let dir = TempDir::new().unwrap();
    let vm = Vm::new(counter().vm_config(2, ConsoleConfig::Sink)).unwrap();
    vm.start().unwrap();
    wait_for("both vCPUs to start", || {
        read_u64(&vm, COUNTER_BOOTS_ADDR) == 2
    });
    wait_for("the guest to count", || read_u64(&vm, COUNTER_ADDR) > 1000);
    vm.pause().unwrap();
    let rips: Vec<u64> = (0..2)
        .map(|i| vm.vcpu_snapshot(i).unwrap().regs.rip)
        .collect();
    let rcxs: Vec<u64> = (0..2)
        .map(|i| vm.vcpu_snapshot(i).unwrap().regs.rcx)
        .collect();
    vm.snapshot(dir.as_path()).unwrap();
    vm.stop();

    let restored = Vm::restore(counter().vm_config(2, ConsoleConfig::Sink), dir.as_path()).unwrap();
    restored.start().unwrap();
    // Parked at once: each vCPU is where it was (a vCPU parks before entering the guest, so
    // a pause right after start may find it not yet moved, or moved on: its count never
    // went back).
    restored.pause().unwrap();
    for i in 0..2 {
        let regs = restored.vcpu_snapshot(i).unwrap().regs;
        assert!(
            regs.rcx >= rcxs[i],
            "vCPU {i} counts on from {}: {}",
            rcxs[i],
            regs.rcx
        );
        let code = GUEST_LOAD_ADDR..GUEST_LOAD_ADDR + counter().code.len() as u64;
        assert!(
            code.contains(&regs.rip),
            "vCPU {i} rip {:#x} (was {:#x})",
            regs.rip,
            rips[i]
        );
    }
    restored.resume().unwrap();
    restored
        .memory()
        .write_obj(1u64, GuestAddress(COUNTER_RELEASE_ADDR))
        .unwrap();
    assert_eq!(wait(&restored), ExitReason::DebugExit { code: 0 });
    assert_eq!(
        read_u64(&restored, COUNTER_BOOTS_ADDR),
        2,
        "no vCPU started over"
    );
}

/// Resident KiB of the mapping that starts at host address `start` (`/proc/self/smaps`).
fn mapping_rss_kib(start: u64) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut here = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((s, _)) = range.split_once('-')
            && let Ok(s) = u64::from_str_radix(s, 16)
        {
            here = s == start;
        } else if here && let Some(v) = line.strip_prefix("Rss:") {
            return v.trim().trim_end_matches("kB").trim().parse().unwrap();
        }
    }
    panic!("no mapping at {start:#x}");
}

#[test]
fn restored_ram_is_mapped_from_the_file_and_read_only_when_touched() {
    const TOUCHED: u64 = 32 << 20;
    const START: u64 = 8 << 20;
    let guest = programs::touch_and_count(START, TOUCHED).unwrap();
    let config = || {
        kubevirt_vmm::VmConfig::new(1, 48 << 20, guest.boot_source())
            .with_serial(ConsoleConfig::Sink)
            .with_debug_exit()
    };
    let dir = TempDir::new().unwrap();
    let vm = Vm::new(config()).unwrap();
    vm.start().unwrap();
    wait_for("the guest to touch its RAM", || {
        read_u64(&vm, COUNTER_ADDR) > 0
    });
    vm.pause().unwrap();
    let info = vm.snapshot(dir.as_path()).unwrap();
    assert!(info.memory_bytes_written >= TOUCHED, "{info:?}");
    vm.stop();
    drop(vm);

    let restored = Vm::restore(config(), dir.as_path()).unwrap();
    let host = restored.memory().get_host_address(GuestAddress(0)).unwrap() as u64;
    let before = mapping_rss_kib(host);
    assert!(
        before < 1024,
        "nothing read at restore: {before} KiB of the {} MiB in the file are resident",
        TOUCHED >> 20
    );
    restored.start().unwrap();
    let at = read_u64(&restored, COUNTER_ADDR);
    wait_for("the restored guest to count", || {
        read_u64(&restored, COUNTER_ADDR) > at + 1000
    });
    let running = mapping_rss_kib(host);
    assert!(running < 1024, "running touches a few pages: {running} KiB");
    // Every touched page came back from the file, as the guest wrote it.
    for page in (START..START + TOUCHED).step_by(1 << 20) {
        assert_eq!(
            restored
                .memory()
                .read_obj::<u8>(GuestAddress(page))
                .unwrap(),
            1
        );
    }
    let after = mapping_rss_kib(host);
    assert!(
        after >= running + 32 * 4,
        "each 1 MiB step faulted a page in: {after} KiB"
    );
    restored.stop();
    drop(restored);

    // With MemoryOptions::prefault the whole file is read in at restore instead.
    let prefaulted = Vm::restore(
        config().with_memory_options(kubevirt_vmm::MemoryOptions { prefault: true }),
        dir.as_path(),
    )
    .unwrap();
    let host = prefaulted
        .memory()
        .get_host_address(GuestAddress(0))
        .unwrap() as u64;
    let resident = mapping_rss_kib(host);
    assert!(
        resident >= TOUCHED >> 10,
        "prefaulted: {resident} KiB resident"
    );
}
