//! Live migration over a Unix socket pair, between two VMs of one process: the guest's
//! downtime (source paused -> target built and acknowledged) and the total time, for a guest
//! that only counts (16 MiB touched once) and one that keeps rewriting 16 MiB of its 64 MiB;
//! against the same dirtying guest moved the cold way, through a snapshot into tmpfs and a
//! restore (pause -> restored VM built: the downtime without pre-copy), and against the
//! memcpy-limited time of sending the final dirty set. Then the cost of copying a disk that
//! lives with the VMI: the virtio-blk stream guest, writing its disk as fast as it can, moved
//! with its disk shared (only the lock moves) and with it copied (`DiskMigration::Copy`: round
//! 0 carries what it wrote so far, the stop-and-copy what it wrote during round 0).
//!
//! Run: `cargo bench -p kubevirt-vmm --bench migration`

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::Criterion;
use kubevirt_vmm::testguest::REPORT_PORT;
use kubevirt_vmm::testguest::blk_stream_run::create_image;
use kubevirt_vmm::testguest::programs::{self, COUNTER_ADDR};
use kubevirt_vmm::testguest::virtio_blk_stream::{Marks, STREAM_MEMORY_SIZE, virtio_blk_stream};
use kubevirt_vmm::virtio::block::{Block, CacheMode, DiskMigration, RawFile};
use kubevirt_vmm::{
    ConsoleConfig, MigrationControl, MigrationOptions, MigrationProgress, Vm, VmConfig,
};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress};

const RAM: u64 = 64 << 20;
const START: u64 = 8 << 20;
const LEN: u64 = 16 << 20;
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
const SETTLE: Duration = Duration::from_millis(100);

fn dirty_config() -> VmConfig {
    let guest = programs::dirty_loop(START, LEN).expect("assemble");
    VmConfig::new(1, RAM, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit()
}

fn idle_config() -> VmConfig {
    let guest = programs::touch_and_count(START, LEN).expect("assemble");
    VmConfig::new(1, RAM, guest.boot_source())
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
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A running source whose guest has been at work for a while.
fn running(config: fn() -> VmConfig) -> Vm {
    let vm = Vm::new(config()).expect("build");
    vm.start().expect("start");
    spin_until("the guest to work", || counter(&vm) > 2);
    vm
}

/// One migration; the target runs until its counter moves, then both go.
fn migrate_once(config: fn() -> VmConfig) -> MigrationProgress {
    let source = running(config);
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let receiver = std::thread::spawn(move || Vm::builder(config()).migrate_from(&mut b));
    let stats = source
        .migrate_to(
            &mut a,
            &MigrationOptions::default(),
            &MigrationControl::new(),
        )
        .expect("migrate");
    let target = receiver.join().expect("target thread").expect("receive");
    let at = counter(&target);
    target.start().expect("start target");
    spin_until("the migrated guest to run", || counter(&target) != at);
    target.stop();
    drop((source, target));
    std::thread::sleep(SETTLE);
    stats
}

/// The cold way: pause, snapshot into `dir` (tmpfs), restore; pause -> restored VM built.
fn cold_once(dir: &Path) -> Duration {
    let source = running(dirty_config);
    let t = Instant::now();
    source.pause().expect("pause");
    source.snapshot(dir).expect("snapshot");
    let target = Vm::restore(dirty_config(), dir).expect("restore");
    let took = t.elapsed();
    drop((source, target));
    std::thread::sleep(SETTLE);
    took
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Host memcpy bandwidth over 64 MiB, bytes per second.
fn memcpy_bandwidth() -> f64 {
    let src = vec![1u8; RAM as usize];
    let mut dst = vec![0u8; RAM as usize];
    dst.copy_from_slice(&src);
    let t = Instant::now();
    for _ in 0..4 {
        dst.copy_from_slice(&src);
        std::hint::black_box(&dst);
    }
    (4 * RAM) as f64 / t.elapsed().as_secs_f64()
}

fn summary(what: &str, config: fn() -> VmConfig, memcpy: f64) {
    const ROUNDS: usize = 9;
    let runs: Vec<MigrationProgress> = (0..ROUNDS).map(|_| migrate_once(config)).collect();
    let pick = |f: &dyn Fn(&MigrationProgress) -> f64| median(runs.iter().map(f).collect());
    let downtime = pick(&|p| p.downtime.unwrap_or_default().as_secs_f64());
    let total = pick(&|p| p.elapsed.as_secs_f64());
    let rounds = pick(&|p| f64::from(p.rounds));
    let bytes = pick(&|p| p.bytes_sent as f64);
    let last_dirty = pick(&|p| p.dirty_pages as f64);
    let rate = pick(&|p| p.dirty_rate_pages_per_sec as f64);
    let bandwidth = pick(&|p| p.bandwidth_bytes_per_sec as f64);
    println!(
        "{what} (median of {ROUNDS}): downtime {:.1} ms, total {:.0} ms, {rounds} rounds, {:.1} MiB sent, \
         dirty rate {:.0} pages/s, bandwidth {:.0} MiB/s, {last_dirty} pages dirty at the pause \
         (memcpy of them alone: {:.2} ms)",
        downtime * 1e3,
        total * 1e3,
        bytes / f64::from(1 << 20),
        rate,
        bandwidth / f64::from(1 << 20),
        last_dirty * 4096.0 / memcpy * 1e3
    );
}

/// The stream guest's last phase mark (1 writing, 2 reading, 3 done).
struct Phase(Arc<AtomicU32>);

impl kubevirt_vmm::BusDevice for Phase {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if let Ok(v) = <[u8; 4]>::try_from(data) {
            self.0.store(u32::from_le_bytes(v), Ordering::SeqCst);
        }
    }
}

/// MiB the stream guest writes (then reads).
const STREAM_MIB: u32 = 1024;

/// The stream guest on `disk`; a migration target of a shared disk opens it inactive (the
/// source holds its lock until the handover).
fn stream_vm(
    disk: &Path,
    mode: DiskMigration,
    target: bool,
) -> (kubevirt_vmm::VmBuilder, Arc<AtomicU32>) {
    let guest = virtio_blk_stream(STREAM_MIB, 4, Marks::ReportPort).expect("assemble");
    let config = VmConfig::new(1, STREAM_MEMORY_SIZE, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit();
    let phase = Arc::new(AtomicU32::new(0));
    let file = if target && mode == DiskMigration::Shared {
        RawFile::open_inactive(disk, false, CacheMode::Writeback)
    } else {
        RawFile::open(disk, false)
    }
    .expect("open the disk");
    let builder = Vm::builder(config)
        .pio_device(REPORT_PORT, 4, Arc::new(Mutex::new(Phase(phase.clone()))))
        .virtio_device(Box::new(
            Block::new(Box::new(file), "bench").with_migration(mode),
        ));
    (builder, phase)
}

/// Migrates the stream guest once it writes, with one pre-copy round; `None` when the
/// guest had stopped writing by the pause (the run does not measure what it should).
fn migrate_stream(dir: &Path, mode: DiskMigration) -> Option<MigrationProgress> {
    let (src, dst) = (dir.join("src.raw"), dir.join("dst.raw"));
    create_image(&src, STREAM_MIB).expect("source disk");
    create_image(&dst, STREAM_MIB).expect("target disk");
    let (builder, phase) = stream_vm(&src, mode, false);
    let source = builder.build().expect("build");
    source.start().expect("start");
    spin_until("the guest to write", || phase.load(Ordering::SeqCst) == 1);
    // Shared: the target opens the same image (the lock is handed over).
    let target_disk = if mode == DiskMigration::Copy {
        &dst
    } else {
        &src
    };
    let (target_builder, _) = stream_vm(target_disk, mode, true);
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let receiver = std::thread::spawn(move || target_builder.migrate_from(&mut b));
    let options = MigrationOptions {
        max_rounds: 1,
        ..MigrationOptions::default()
    };
    let stats = source.migrate_to(&mut a, &options, &MigrationControl::new());
    let target = receiver.join().expect("target thread");
    // The source's last mark before the pause: 1 while it still wrote.
    let writing = phase.load(Ordering::SeqCst) == 1;
    let (stats, target) = (stats.expect("migrate"), target.expect("receive"));
    target.start().expect("start target");
    let _ = target.wait_timeout(GUEST_TIMEOUT);
    drop((source, target));
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
    std::thread::sleep(SETTLE);
    writing.then_some(stats)
}

fn disk_summary(dir: &Path, what: &str, mode: DiskMigration) {
    const ROUNDS: usize = 5;
    let runs: Vec<MigrationProgress> = (0..ROUNDS)
        .filter_map(|_| migrate_stream(dir, mode))
        .collect();
    if runs.is_empty() {
        println!("{what}: the guest never was still writing at the pause");
        return;
    }
    let pick = |f: &dyn Fn(&MigrationProgress) -> f64| median(runs.iter().map(f).collect());
    let downtime = pick(&|p| p.downtime.unwrap_or_default().as_secs_f64());
    let total = pick(&|p| p.elapsed.as_secs_f64());
    let disk = pick(&|p| p.disk_bytes as f64);
    let bytes = pick(&|p| p.bytes_sent as f64);
    let bandwidth = pick(&|p| p.bandwidth_bytes_per_sec as f64);
    println!(
        "{what} (median of {} runs whose guest still wrote at the pause): downtime {:.1} ms, \
         total {:.0} ms, {:.1} MiB of disk copied, {:.1} MiB sent, round-0 bandwidth {:.0} MiB/s",
        runs.len(),
        downtime * 1e3,
        total * 1e3,
        disk / f64::from(1 << 20),
        bytes / f64::from(1 << 20),
        bandwidth / f64::from(1 << 20),
    );
}

fn main() {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!(
        "kubevirt-vmm-migration-bench-{}",
        std::process::id()
    ));
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("downtime_64MiB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("live_idle_16MiB_touched", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| migrate_once(idle_config).downtime.unwrap_or_default())
                .sum()
        })
    });
    g.bench_function("live_rewriting_16MiB", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| migrate_once(dirty_config).downtime.unwrap_or_default())
                .sum()
        })
    });
    g.bench_function("cold_snapshot_restore_tmpfs_rewriting_16MiB", |b| {
        b.iter_custom(|n| (0..n).map(|_| cold_once(&dir)).sum())
    });
    g.finish();
    let memcpy = memcpy_bandwidth();
    println!("host memcpy: {:.0} MiB/s", memcpy / f64::from(1 << 20));
    summary(
        "live, counting guest (16 MiB touched once)",
        idle_config,
        memcpy,
    );
    summary("live, guest rewriting 16 MiB", dirty_config, memcpy);
    std::fs::create_dir_all(&dir).expect("bench dir");
    disk_summary(
        &dir,
        "stream guest writing its disk, disk shared (lock handover)",
        DiskMigration::Shared,
    );
    disk_summary(
        &dir,
        "stream guest writing its disk, disk copied",
        DiskMigration::Copy,
    );
    c.final_summary();
    let _ = std::fs::remove_dir_all(&dir);
}
