//! The streaming virtio-blk guest with several requests in flight: it completes without errors
//! at every depth, and (ignored by default, a measurement) how read and write throughput
//! change with the depth against host `pread`/`pwrite` on the same file:
//! `cargo test --release -p kubevirt-vmm --test blk_queue_depth -- --ignored --nocapture`
//! (`BLK_MIB` = MiB per run, default 64; `BLK_RUNS` = runs, median taken, default 5).

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::wait;
use kubevirt_vmm::testguest::REPORT_PORT;
use kubevirt_vmm::testguest::virtio_blk_stream::{
    STREAM_ERRORS, STREAM_IO_LEN, STREAM_MEMORY_SIZE, virtio_blk_stream_queued,
};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{BusDevice, ConsoleConfig, ExitReason, Vm, VmConfig};
use vm_memory::{Bytes, GuestAddress};

/// Timestamps each 4-byte phase mark.
#[derive(Default)]
struct Marks(Vec<(u32, Instant)>);

impl BusDevice for Marks {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if let Ok(v) = <[u8; 4]>::try_from(data) {
            self.0.push((u32::from_le_bytes(v), Instant::now()));
        }
    }
}

/// One guest run of `mib` MiB at `depth`: (write + flush time, read time).
fn guest_run(path: &std::path::Path, mib: u32, depth: u32) -> (Duration, Duration) {
    let guest = virtio_blk_stream_queued(mib, depth).unwrap();
    let marks = Arc::new(Mutex::new(Marks::default()));
    let config = VmConfig::new(1, STREAM_MEMORY_SIZE, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit();
    let disk = Block::new(Box::new(RawFile::open(path, false).unwrap()), "depth");
    let vm = Vm::builder(config)
        .pio_device(REPORT_PORT, 4, marks.clone())
        .virtio_device(Box::new(disk))
        .build()
        .unwrap();
    vm.start().unwrap();
    assert_eq!(wait(&vm), ExitReason::DebugExit { code: 0 });
    let errors: u32 = vm.memory().read_obj(GuestAddress(STREAM_ERRORS)).unwrap();
    assert_eq!(errors, 0, "requests failed in the guest at depth {depth}");
    let m = &marks.lock().unwrap().0;
    let at = |v: u32| m.iter().find(|(x, _)| *x == v).map(|(_, t)| *t).unwrap();
    (at(2) - at(1), at(3) - at(2))
}

fn image(mib: u32) -> (vmm_sys_util::tempdir::TempDir, std::path::PathBuf) {
    let dir = vmm_sys_util::tempdir::TempDir::new().unwrap();
    let path = dir.as_path().join("disk.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(u64::from(mib) * u64::from(STREAM_IO_LEN))
        .unwrap();
    (dir, path)
}

#[test]
fn every_depth_completes_without_errors() {
    let (_dir, path) = image(8);
    for depth in [1, 2, 4] {
        guest_run(&path, 8, depth);
    }
}

fn host_run(path: &std::path::Path, mib: u32) -> (Duration, Duration) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut buf = vec![0x5au8; STREAM_IO_LEN as usize];
    let start = Instant::now();
    for i in 0..u64::from(mib) {
        f.write_all_at(&buf, i * u64::from(STREAM_IO_LEN)).unwrap();
    }
    f.sync_data().unwrap();
    let write = start.elapsed();
    let start = Instant::now();
    for i in 0..u64::from(mib) {
        f.read_exact_at(&mut buf, i * u64::from(STREAM_IO_LEN))
            .unwrap();
    }
    (write, start.elapsed())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement; run with --release --ignored --nocapture"]
fn throughput_by_queue_depth() {
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (mib, runs) = (env("BLK_MIB", 64), env("BLK_RUNS", 5));
    let (_dir, path) = image(mib);
    let mbps = |d: Duration| f64::from(mib) / d.as_secs_f64();
    println!("virtio-blk sequential 1 MiB requests, {mib} MiB per run, median of {runs} runs");
    for depth in [1, 2, 4] {
        let (mut gw, mut gr, mut hw, mut hr) = (vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            let (w, r) = guest_run(&path, mib, depth);
            gw.push(mbps(w));
            gr.push(mbps(r));
            let (w, r) = host_run(&path, mib);
            hw.push(mbps(w));
            hr.push(mbps(r));
        }
        let (gw, gr, hw, hr) = (median(gw), median(gr), median(hw), median(hr));
        println!(
            "depth {depth}: write+flush {gw:7.1} MiB/s vs host {hw:7.1} ({:.2}x); read {gr:7.1} MiB/s vs host {hr:7.1} ({:.2}x)",
            gw / hw,
            gr / hr
        );
    }
}
