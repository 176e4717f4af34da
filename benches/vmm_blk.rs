//! virtio-blk sequential 1 MiB writes and reads from a CPL 3 guest driver, against host
//! `pwrite`/`pread` of the same sizes on the same file in the same run.
//!
//! Run: `cargo bench --bench vmm_blk` (optionally `-- <MiB per run> <runs>`). The guest
//! (`testguest::virtio_blk_stream`) issues one 1 MiB request at a time, notifies through the
//! ioeventfd and polls the used ring; phases are timestamped by a port device, so VM creation
//! and device discovery are not timed. Writes include the final flush (fdatasync) on both
//! sides. Both sides hit the page cache for reads (the data was just written).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubevirt_vmm::testguest::REPORT_PORT;
use kubevirt_vmm::testguest::virtio_blk_stream::{
    STREAM_ERRORS, STREAM_IO_LEN, STREAM_MEMORY_SIZE, virtio_blk_stream, virtio_blk_stream_queued,
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
        let now = Instant::now();
        if data.len() == 4 {
            self.0
                .push((u32::from_le_bytes(data.try_into().unwrap()), now));
        }
    }
}

/// One guest run with `depth` requests in flight: (write + flush time, read time).
fn guest_run(path: &std::path::Path, mib: u32, depth: u32) -> (Duration, Duration) {
    let guest = if depth == 1 {
        virtio_blk_stream(mib)
    } else {
        virtio_blk_stream_queued(mib, depth)
    }
    .expect("assemble");
    let marks = Arc::new(Mutex::new(Marks::default()));
    let config = VmConfig::new(1, STREAM_MEMORY_SIZE, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit();
    let disk = Block::new(
        Box::new(RawFile::open(path, false).expect("open image")),
        "bench",
    );
    let vm = Vm::builder(config)
        .pio_device(REPORT_PORT, 4, marks.clone())
        .virtio_device(Box::new(disk))
        .build()
        .expect("build VM");
    vm.start().expect("start");
    let reason = vm
        .wait_timeout(Duration::from_secs(300))
        .unwrap_or_else(|| vm.stop());
    assert_eq!(reason, ExitReason::DebugExit { code: 0 }, "guest failed");
    let errors: u32 = vm.memory().read_obj(GuestAddress(STREAM_ERRORS)).unwrap();
    assert_eq!(errors, 0, "requests failed in the guest");
    let m = &marks.lock().unwrap().0;
    let at = |v: u32| {
        m.iter()
            .find(|(x, _)| *x == v)
            .map(|(_, t)| *t)
            .expect("phase mark")
    };
    (at(2) - at(1), at(3) - at(2))
}

/// The host peer: the same writes (+ fdatasync) and reads with pwrite/pread.
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

fn main() {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(64);
    let runs = args.get(1).copied().unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("vmm-blk-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(u64::from(mib) * u64::from(STREAM_IO_LEN))
        .unwrap();
    drop(f);

    let mbps = |d: Duration| f64::from(mib) / d.as_secs_f64();
    // Depth 1 is the worst case (every request waits for the notify round trip); depth 2 is what
    // any real driver (Linux blk-mq) keeps in flight for a sequential stream.
    let depths = [1u32, 2];
    let mut guest = vec![(vec![], vec![]); depths.len()];
    let (mut hw, mut hr) = (vec![], vec![]);
    for _ in 0..runs {
        for (i, &depth) in depths.iter().enumerate() {
            let (w, r) = guest_run(&path, mib, depth);
            guest[i].0.push(mbps(w));
            guest[i].1.push(mbps(r));
        }
        let (w, r) = host_run(&path, mib);
        hw.push(mbps(w));
        hr.push(mbps(r));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (hw, hr) = (median(hw), median(hr));
    println!("virtio-blk sequential 1 MiB, {mib} MiB per run, median of {runs} runs");
    for (&depth, (gw, gr)) in depths.iter().zip(guest) {
        let (gw, gr) = (median(gw), median(gr));
        println!(
            "depth {depth} write+flush: guest {gw:8.1} MiB/s  host pwrite+fdatasync {hw:8.1} MiB/s  ratio {:.2}x",
            gw / hw
        );
        println!(
            "depth {depth} read:        guest {gr:8.1} MiB/s  host pread            {hr:8.1} MiB/s  ratio {:.2}x",
            gr / hr
        );
    }
}
