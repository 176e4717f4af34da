//! qcow2 against raw: sequential and random 4 KiB reads of allocated clusters through
//! `Qcow2` and `RawFile` on the same data (a raw file and its `qemu-img convert -O qcow2`
//! copy, 64 KiB clusters), both from the page cache.
//!
//! Run: `cargo bench -p kubevirt-vmm --bench qcow2_read`. Criterion reports each case; the
//! closing lines give qcow2/raw throughput ratios from interleaved timed rounds of the same
//! run (median of 9 rounds of 16,384 reads each), which docs/PERFORMANCE.md records.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use criterion::Criterion;
use kubevirt_vmm::virtio::block::{BlockBackend, CacheMode, RawFile, open_image};

const DISK: u64 = 256 << 20;
const READ: usize = 4096;

/// A cheap, fixed pseudo-random sequence of 4 KiB-aligned offsets.
struct Offsets {
    state: u64,
    seq: u64,
    random: bool,
}

impl Offsets {
    fn new(random: bool) -> Offsets {
        Offsets {
            state: 0x9e37_79b9_7f4a_7c15,
            seq: 0,
            random,
        }
    }

    fn next(&mut self) -> u64 {
        if self.random {
            self.state = self
                .state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.state >> 20) % (DISK / READ as u64)) * READ as u64
        } else {
            self.seq = (self.seq + READ as u64) % DISK;
            self.seq
        }
    }
}

fn read_one(disk: &mut dyn BlockBackend, offsets: &mut Offsets, buf: &mut [u8]) {
    disk.read_at(buf, offsets.next()).expect("read");
    black_box(&buf[..]);
}

fn images(dir: &Path) -> (Box<dyn BlockBackend>, Box<dyn BlockBackend>) {
    let raw = dir.join("disk.raw");
    let qcow2 = dir.join("disk.qcow2");
    let data: Vec<u8> = (0..DISK as usize)
        .map(|i| (i as u32).wrapping_mul(2654435761) as u8 | 1)
        .collect();
    std::fs::write(&raw, &data).expect("write the raw image");
    let ok = Command::new("qemu-img")
        .args([
            "convert",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            qcow2.to_str().unwrap(),
        ])
        .status()
        .expect("qemu-img (Debian qemu-utils) runs");
    assert!(ok.success(), "qemu-img convert failed");
    let r: Box<dyn BlockBackend> = Box::new(RawFile::open(&raw, true).expect("open raw"));
    let q = open_image(&qcow2, true, CacheMode::Writeback, &[]).expect("open qcow2");
    (r, q)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let dir = kubevirt_testsupport::tempdir("qcow2-read-bench");
    let (mut raw, mut qcow2) = images(&dir);
    let mut buf = vec![0u8; READ];
    let mut c = Criterion::default().configure_from_args();
    for (name, random) in [("sequential", false), ("random", true)] {
        let mut g = c.benchmark_group(format!("4k_{name}_read"));
        g.throughput(criterion::Throughput::Bytes(READ as u64));
        let mut o = Offsets::new(random);
        g.bench_function("raw", |b| {
            b.iter(|| read_one(raw.as_mut(), &mut o, &mut buf))
        });
        let mut o = Offsets::new(random);
        g.bench_function("qcow2", |b| {
            b.iter(|| read_one(qcow2.as_mut(), &mut o, &mut buf))
        });
        g.finish();
    }
    c.final_summary();

    for (name, random) in [("sequential", false), ("random", true)] {
        let (mut rt, mut qt) = (vec![], vec![]);
        for _ in 0..9 {
            for (disk, times) in [(&mut raw, &mut rt), (&mut qcow2, &mut qt)] {
                let mut o = Offsets::new(random);
                let t = Instant::now();
                for _ in 0..16384 {
                    read_one(disk.as_mut(), &mut o, &mut buf);
                }
                times.push(16384.0 * READ as f64 / t.elapsed().as_secs_f64() / f64::from(1 << 20));
            }
        }
        let (r, q) = (median(rt), median(qt));
        println!(
            "4 KiB {name} reads: qcow2 {q:8.1} MiB/s  raw {r:8.1} MiB/s  ratio {:.2}x",
            q / r
        );
    }
    drop((raw, qcow2));
    drop(dir); // removes the images
}
