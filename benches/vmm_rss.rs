//! VMM memory overhead: how much resident memory a running VM adds to the process beyond the
//! guest RAM the guest touched. The guest touches 32 MiB of its 64 MiB; the overhead is the
//! growth of the process's RSS minus the RSS of the guest-RAM mapping (read from
//! /proc/self/smaps), compared with the 2 MiB limit. Not a timing, so no criterion harness.
//!
//! Run: `cargo bench --bench vmm_rss`

use std::fs;

use kubevirt_vmm::testguest::programs;
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm, VmConfig};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

const LIMIT_KIB: u64 = 2048;
const GUEST_RAM: u64 = 64 << 20;
const TOUCHED: u64 = 32 << 20;

fn vm_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// RSS of the mappings that start at one of `starts`.
fn mappings_rss_kib(starts: &[u64]) -> u64 {
    let smaps = fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut total = 0;
    let mut in_guest = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((start, _)) = range.split_once('-')
            && let Ok(start) = u64::from_str_radix(start, 16)
        {
            in_guest = starts.contains(&start);
        } else if in_guest && let Some(v) = line.strip_prefix("Rss:") {
            total += v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
    }
    total
}

fn main() {
    let guest = programs::touch_pages(0x40_0000, TOUCHED).expect("assemble");
    let before = vm_rss_kib();
    let config = VmConfig::new(1, GUEST_RAM, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit();
    let vm = Vm::new(config).expect("build VM");
    vm.start().expect("start");
    assert_eq!(vm.wait(), ExitReason::DebugExit { code: 0 });
    let after = vm_rss_kib();
    let starts: Vec<u64> = vm
        .memory()
        .iter()
        .map(|r| {
            vm.memory()
                .get_host_address(r.start_addr())
                .expect("host address") as u64
        })
        .collect();
    let guest_kib = mappings_rss_kib(&starts);
    let overhead = (after - before).saturating_sub(guest_kib);
    println!(
        "process RSS grew {} KiB; guest RAM resident {} KiB (touched {} KiB); VMM overhead {} KiB = {:.2}x the {} KiB limit",
        after - before,
        guest_kib,
        TOUCHED >> 10,
        overhead,
        overhead as f64 / LIMIT_KIB as f64,
        LIMIT_KIB
    );
}
