//! Snapshot restore -> running guest, with 256 MiB of guest RAM touched: from just before
//! `Vm::restore` to the moment the restored guest's counter moves (its first stores after the
//! restore). Goal: <= 10 ms, Firecracker's published snapshot-restore anchor; the ratio to it
//! is reported. Also reported: how long taking the snapshot took and how much it wrote, and how
//! long reading all 256 MiB of a restored guest takes (pages fault in from the file). Each
//! restore starts 100 ms after the previous VM was dropped, outside the measured time.
//!
//! Run: `cargo bench --bench vmm_snapshot`

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use kubevirt_vmm::testguest::programs::{self, COUNTER_ADDR, COUNTER_RELEASE_ADDR};
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm, VmConfig};
use vm_memory::{Bytes, GuestAddress};

const LIMIT: Duration = Duration::from_millis(10);
const TOUCHED: u64 = 256 << 20;
const TOUCH_START: u64 = 16 << 20;
const GUEST_RAM: u64 = 320 << 20;
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
const SETTLE: Duration = Duration::from_millis(100);

fn config() -> VmConfig {
    let guest = programs::touch_and_count(TOUCH_START, TOUCHED).expect("assemble");
    VmConfig::new(1, GUEST_RAM, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit()
}

fn counter(vm: &Vm) -> u64 {
    vm.memory()
        .read_obj(GuestAddress(COUNTER_ADDR))
        .expect("counter")
}

fn spin_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Yield, not spin: with 2 host cores a spinning reader can keep the vCPU thread waiting.
        std::thread::yield_now();
    }
}

/// Runs the guest until it has touched its 256 MiB and counts, then snapshots it into `dir`.
fn prepare(dir: &Path) {
    let vm = Vm::new(config()).expect("build VM");
    vm.start().expect("start");
    spin_until("the guest to touch its RAM", || counter(&vm) > 0);
    vm.pause().expect("pause");
    let t = Instant::now();
    let info = vm.snapshot(dir).expect("snapshot");
    println!(
        "snapshot of {} MiB guest RAM ({} MiB touched): {:.1} ms, {} MiB written to the memory file, state file {} KiB",
        GUEST_RAM >> 20,
        TOUCHED >> 20,
        t.elapsed().as_secs_f64() * 1e3,
        info.memory_bytes_written >> 20,
        info.state_bytes >> 10
    );
    vm.stop();
}

/// Restore -> the guest's first counter store; the VM is then stopped.
fn restore_once(dir: &Path) -> Duration {
    restore_phases(dir).0
}

/// (restore -> running, of which `Vm::restore` alone).
fn restore_phases(dir: &Path) -> (Duration, Duration) {
    let start = Instant::now();
    let vm = Vm::restore(config(), dir).expect("restore");
    let built = start.elapsed();
    let saved = counter(&vm);
    vm.start().expect("start");
    spin_until("the restored guest to run", || counter(&vm) != saved);
    let took = start.elapsed();
    vm.stop();
    drop(vm);
    // Let the kernel finish tearing down the VM just dropped (its 256 MiB of shadow paging
    // and file-backed RAM) outside the measured time: back to back, that teardown overlaps
    // the next restore and adds 0-15 ms to it here.
    std::thread::sleep(SETTLE);
    (took, built)
}

/// Restore, then let the guest touch all 256 MiB again (a fresh touch_and_count run over the
/// restored RAM): how much the lazy, fault-on-touch mapping costs a guest that uses it all.
fn retouch_after_restore(dir: &Path) -> Duration {
    let vm = Vm::restore(config(), dir).expect("restore");
    vm.start().expect("start");
    let start = Instant::now();
    // The restored guest is in its counting loop: host-side reads of every page stand in
    // for the guest touching them (both fault the page in from the file).
    let mut sum = 0u64;
    for page in (TOUCH_START..TOUCH_START + TOUCHED).step_by(4096) {
        sum += u64::from(
            vm.memory()
                .read_obj::<u8>(GuestAddress(page))
                .expect("page"),
        );
    }
    let took = start.elapsed();
    assert_eq!(sum, TOUCHED / 4096, "every touched page came back");
    vm.memory()
        .write_obj(1u64, GuestAddress(COUNTER_RELEASE_ADDR))
        .expect("release");
    assert_eq!(vm.wait(), ExitReason::DebugExit { code: 0 });
    took
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(c: &mut Criterion, dir: &Path) {
    let mut g = c.benchmark_group("snapshot_restore_to_running_256MiB");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("kubevirt_vmm", |b| {
        b.iter_custom(|n| (0..n).map(|_| restore_once(dir)).sum())
    });
    g.finish();
}

fn ratio(dir: &Path) {
    const ROUNDS: usize = 30;
    let (mut r, mut b): (Vec<f64>, Vec<f64>) = (0..ROUNDS)
        .map(|_| {
            let (t, b) = restore_phases(dir);
            (t.as_secs_f64(), b.as_secs_f64())
        })
        .unzip();
    let m = median(&mut r);
    let mb = median(&mut b);
    println!(
        "of which Vm::restore (read and check the snapshot, build the VM, map RAM, set state): median {:.3} ms, min {:.3} ms, max {:.3} ms",
        mb * 1e3,
        b[0] * 1e3,
        b[ROUNDS - 1] * 1e3
    );
    println!(
        "restore -> running with {} MiB touched (median of {ROUNDS}): {:.3} ms ({:.2}x the 10 ms goal), min {:.3} ms, max {:.3} ms",
        TOUCHED >> 20,
        m * 1e3,
        m / LIMIT.as_secs_f64(),
        r[0] * 1e3,
        r[ROUNDS - 1] * 1e3
    );
    let retouch = retouch_after_restore(dir);
    println!(
        "after a restore, reading all {} MiB faults it in from the memory file in {:.1} ms ({:.2} us per 4 KiB page)",
        TOUCHED >> 20,
        retouch.as_secs_f64() * 1e3,
        retouch.as_secs_f64() * 1e6 / (TOUCHED / 4096) as f64
    );
}

fn main() {
    let dir = std::env::temp_dir().join(format!(
        "kubevirt-vmm-snapshot-bench-{}",
        std::process::id()
    ));
    prepare(&dir);
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &dir);
    ratio(&dir);
    c.final_summary();
    let _ = std::fs::remove_dir_all(&dir);
}
