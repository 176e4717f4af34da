//! Exit round trip: the guest does `out` to a port, KVM exits to userspace, the VMM hands the
//! access to a device and re-enters. Measured on kubevirt-vmm (vCPU thread, `Bus` dispatch,
//! device mutex, lifecycle gate) and, in the same run, on a bare kvm-ioctls loop with no bus.
//! Goal: kubevirt-vmm / raw <= 1.05.
//!
//! Run: `cargo bench --bench vmm_exit`

#[path = "vmm_support/mod.rs"]
mod support;

use std::time::Duration;

use criterion::{Criterion, criterion_group};
use kubevirt_vmm::testguest::programs;
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};
use support::{BENCH_PORT, Stamp, median, run_raw};

/// Time for `exits` round trips on kubevirt-vmm.
fn ours(exits: u64) -> Duration {
    let guest = programs::out_loop(BENCH_PORT, exits + 1).expect("assemble");
    let stamp = Stamp::shared(exits + 1);
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .pio_device(BENCH_PORT, 1, stamp.clone())
        .build()
        .expect("build VM");
    vm.start().expect("start");
    assert_eq!(vm.wait(), ExitReason::DebugExit { code: 0 });
    stamp.lock().expect("stamp").span()
}

/// Time for `exits` round trips on the raw kvm-ioctls loop.
fn raw(exits: u64) -> Duration {
    let guest = programs::out_loop(BENCH_PORT, exits + 1).expect("assemble");
    let mut stamp = Stamp {
        count: 0,
        last: exits + 1,
        first_at: None,
        last_at: None,
    };
    run_raw(&guest, &mut stamp);
    stamp.span()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("exit_round_trip");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("kubevirt_vmm_bus", |b| b.iter_custom(ours));
    g.bench_function("raw_kvm_ioctls", |b| b.iter_custom(raw));
    g.finish();
}

/// Paired comparison: alternate the two, same number of exits each, medians of per-exit time.
fn ratio() {
    const EXITS: u64 = 4000;
    const ROUNDS: usize = 15;
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        o.push(ours(EXITS).as_secs_f64() / EXITS as f64);
        r.push(raw(EXITS).as_secs_f64() / EXITS as f64);
    }
    let (o, r) = (median(&mut o), median(&mut r));
    println!(
        "exit round trip (median of {ROUNDS} x {EXITS} exits): kubevirt-vmm {:.2} us, raw kvm-ioctls {:.2} us, ratio {:.3}x (goal <= 1.05x)",
        o * 1e6,
        r * 1e6,
        o / r
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    ratio();
    Criterion::default().configure_from_args().final_summary();
}
