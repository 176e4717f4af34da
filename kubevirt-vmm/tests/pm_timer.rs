//! The PIIX4 PM timer through a real vCPU: a CPL 3 guest moves the PM block by writing PMBA
//! and PMIOSE through PCI configuration ports 0xCF8/0xCFC, reads `PM_TMR` at the new base + 8
//! across a busy loop, and reads the old base, which no longer decodes.

mod common;

use std::time::Instant;

use common::{Recorder, Seen, wait};
use kubevirt_vmm::acpi::pm_timer::{PM_TIMER_HZ, PM_TIMER_MASK};
use kubevirt_vmm::pci::piix::{PM_BASE, PM_TIMER_OFFSET};
use kubevirt_vmm::testguest::{REPORT_PORT, programs};
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};

#[test]
fn a_cpl3_guest_relocates_the_pm_block_and_reads_a_running_timer() {
    let new_base = 0xc000u16;
    let report = Recorder::shared(0);
    let guest = programs::pm_timer_probe(new_base, PM_BASE + PM_TIMER_OFFSET).unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .pio_device(REPORT_PORT, 4, report.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    let elapsed = started.elapsed().as_secs_f64();
    let values: Vec<u32> = report
        .lock()
        .unwrap()
        .seen
        .iter()
        .map(|s| match s {
            Seen::Write(_, 0, b) if b.len() == 4 => u32::from_le_bytes(b[..4].try_into().unwrap()),
            other => panic!("unexpected report access {other:?}"),
        })
        .collect();
    assert_eq!(values.len(), 4, "{values:x?}");
    assert_eq!(
        values[0],
        u32::from(new_base) | 1,
        "PMBA reads back with bit 0 set"
    );
    let (t0, t1) = (values[1], values[2]);
    assert!(
        t0 <= PM_TIMER_MASK && t1 <= PM_TIMER_MASK,
        "{t0:#x} {t1:#x}"
    );
    let ticks = t1.wrapping_sub(t0) & PM_TIMER_MASK;
    // The busy loop takes milliseconds; the two reads cannot be further apart than the run.
    assert!(ticks > 1000, "the timer advanced only {ticks} ticks");
    assert!(
        f64::from(ticks) <= elapsed * PM_TIMER_HZ as f64 * 1.05,
        "{ticks} ticks in a {elapsed:.3} s run"
    );
    assert_eq!(values[3], u32::MAX, "the old base no longer decodes");
    eprintln!(
        "PM timer at {:#x}: {ticks} ticks ({:.2} ms) across the guest's busy loop, whole run {:.1} ms",
        new_base + PM_TIMER_OFFSET,
        f64::from(ticks) * 1e3 / PM_TIMER_HZ as f64,
        elapsed * 1e3
    );
}
