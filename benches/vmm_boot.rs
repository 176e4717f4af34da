//! VM create -> first guest instruction: from just before `Vm::new` to the guest's first
//! port write, on kubevirt-vmm and, in the same run, on a bare kvm-ioctls setup of the same
//! guest (its floor). Goal: <= 5 ms; the ratio to that limit is reported.
//!
//! Run: `cargo bench --bench vmm_boot`

#[path = "vmm_support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use kubevirt_vmm::testguest::programs;
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};
use support::{BENCH_PORT, Stamp, median, run_raw};

const LIMIT: Duration = Duration::from_millis(5);

fn ours_once() -> Duration {
    let guest = programs::first_out(BENCH_PORT).expect("assemble");
    let stamp = Stamp::shared(1);
    let start = Instant::now();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .pio_device(BENCH_PORT, 1, stamp.clone())
        .build()
        .expect("build VM");
    vm.start().expect("start");
    assert_eq!(vm.wait(), ExitReason::DebugExit { code: 0 });
    let first = stamp
        .lock()
        .expect("stamp")
        .first_at
        .expect("no guest write");
    first - start
}

fn raw_once() -> Duration {
    let guest = programs::first_out(BENCH_PORT).expect("assemble");
    let mut stamp = Stamp {
        count: 0,
        last: 1,
        first_at: None,
        last_at: None,
    };
    run_raw(&guest, &mut stamp)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("create_to_first_instruction");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("kubevirt_vmm", |b| {
        b.iter_custom(|n| (0..n).map(|_| ours_once()).sum())
    });
    g.bench_function("raw_kvm_ioctls", |b| {
        b.iter_custom(|n| (0..n).map(|_| raw_once()).sum())
    });
    g.finish();
}

fn ratio() {
    const ROUNDS: usize = 30;
    let (mut o, mut r) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        o.push(ours_once().as_secs_f64());
        r.push(raw_once().as_secs_f64());
    }
    let (o, r) = (median(&mut o), median(&mut r));
    println!(
        "create -> first instruction (median of {ROUNDS}): kubevirt-vmm {:.3} ms ({:.2}x the 5 ms limit), raw kvm-ioctls {:.3} ms, vmm/raw {:.2}x",
        o * 1e3,
        o / LIMIT.as_secs_f64(),
        r * 1e3,
        o / r
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    ratio();
    Criterion::default().configure_from_args().final_summary();
}
