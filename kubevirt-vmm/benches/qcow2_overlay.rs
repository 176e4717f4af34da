//! 4 KiB reads and writes through a qcow2 overlay, format layer only: kubevirt-vmm's `Qcow2`
//! (`open_image`, the launcher's path) against QEMU's qcow2 driver (`qemu-img bench`) on the
//! same images with the same offsets in the same run, and the same requests to a raw file
//! through `RawFile` as the reference.
//!
//! The layout is the launcher's containerDisk one: a raw base filled with data and a qcow2
//! overlay over it (`qemu-img create -f qcow2 -b base.raw -F raw`, 64 KiB clusters). Eight
//! workloads, each `MiB * 256` requests of 4 KiB from one guest buffer:
//!
//! - reads of unallocated clusters (the overlay is empty: every read goes to the base);
//! - reads of allocated clusters (an overlay every cluster of which was written);
//! - allocating writes into an empty overlay (the first write into a cluster copies the rest
//!   of it from the base, the next ones go in place, as in a guest);
//! - rewrites of allocated clusters (no metadata changes);
//!
//! each sequential (offsets 0, 4 KiB, 8 KiB, ...) and random. "Random" is what `qemu-img
//! bench` can do: a stride permutation, offset k = k * step mod disk size with a step of an
//! odd number of 4 KiB blocks near 0.62 of the disk, so every block is visited once and
//! neighbours in time are far apart on disk; ours walks the very same offsets.
//!
//! QEMU's time is what `qemu-img bench -t writeback -d 1` reports (one request in flight, the
//! final flush and close not timed), with its default `aio=threads` (each request handed to a
//! worker thread) and with `aio=io_uring`; "ours / QEMU" is against the faster of the two in
//! each round. Ours times the same loop of `read_to_guest` / `write_from_guest` calls, the
//! flush after the clock stops; our overlay and our raw file run in one interleaved pass
//! (slices of 256 requests alternating), so "ours / raw" compares time spent side by side,
//! by the wall clock and by the thread's CPU time (on a machine shared with builds, a 4 KiB
//! slice is ~0.3 ms and one preemption is several: the CPU-time ratio is the stable one).
//! Each write case starts from a fresh copy of the same template image. Every round runs each
//! workload's three runs (ours and raw, QEMU threads, QEMU io_uring) in a rotating order; the
//! table gives medians, and for the ratios the median of the per-round ratios.
//!
//! Run: `cargo bench -p kubevirt-vmm --bench qcow2_overlay [-- <MiB> <rounds> [<request KiB>]]`
//! (default 64 MiB, 9 rounds, 4 KiB; needs Debian's qemu-utils).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kubevirt_vmm::GuestMemoryMmap;
use kubevirt_vmm::virtio::block::{BlockBackend, CacheMode, open_image};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// The request size unless the third argument gives one in KiB.
const REQUEST: u64 = 4096;
/// The byte every write carries (`qemu-img bench --pattern`), so both sides write the same.
const PATTERN: u8 = 0x5a;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("running qemu-img (Debian's qemu-utils)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One workload: what it does, to which template, in which order.
#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    write: bool,
    /// Whether it runs on the fully allocated overlay (else on the empty one).
    allocated: bool,
    random: bool,
}

const WORKLOADS: [Workload; 8] = [
    Workload {
        name: "read, unallocated (base)",
        write: false,
        allocated: false,
        random: false,
    },
    Workload {
        name: "read, unallocated (base)",
        write: false,
        allocated: false,
        random: true,
    },
    Workload {
        name: "read, allocated",
        write: false,
        allocated: true,
        random: false,
    },
    Workload {
        name: "read, allocated",
        write: false,
        allocated: true,
        random: true,
    },
    Workload {
        name: "write, allocating",
        write: true,
        allocated: false,
        random: false,
    },
    Workload {
        name: "write, allocating",
        write: true,
        allocated: false,
        random: true,
    },
    Workload {
        name: "rewrite, allocated",
        write: true,
        allocated: true,
        random: false,
    },
    Workload {
        name: "rewrite, allocated",
        write: true,
        allocated: true,
        random: true,
    },
];

/// The images of one invocation, under `dir`.
struct Images {
    dir: PathBuf,
    base: PathBuf,
    raw: PathBuf,
    empty: PathBuf,
    full: PathBuf,
    size: u64,
}

impl Images {
    fn make(dir: &Path, mib: u64) -> Images {
        let size = mib << 20;
        let base = dir.join("base.raw");
        let data: Vec<u8> = (0..size as usize)
            .map(|i| (i as u32).wrapping_mul(2654435761) as u8 | 1)
            .collect();
        std::fs::write(&base, &data).expect("writing the base");
        let raw = dir.join("raw.raw");
        std::fs::write(&raw, &data).expect("writing the raw reference");
        let empty = dir.join("empty.qcow2");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(&empty));
        let full = dir.join("full.qcow2");
        std::fs::copy(&empty, &full).expect("copying the overlay");
        // Every cluster allocated, in order, by QEMU: the same layout for both sides.
        run(Command::new("qemu-img")
            .args([
                "bench", "-q", "-w", "-f", "qcow2", "-t", "unsafe", "-s", "1M",
            ])
            .args(["-c", &mib.to_string(), "--pattern=165"])
            .arg(&full));
        // The same page-cache shape for every file the reads use: written out, dropped from
        // the cache, read back in sequentially (how a file is first written decides its folio
        // sizes, and that alone moves small-request costs by up to 4x).
        for f in [&base, &raw, &full] {
            recache(f);
        }
        Images {
            dir: dir.to_owned(),
            base,
            raw,
            empty,
            full,
            size,
        }
    }

    /// The image a case of `w` runs on: the template itself for reads, a fresh copy of it
    /// named after `who` for writes.
    fn for_case(&self, w: Workload, who: &str) -> PathBuf {
        let template = if w.allocated { &self.full } else { &self.empty };
        if !w.write {
            return template.clone();
        }
        let copy = self.dir.join(format!("{who}.qcow2"));
        std::fs::copy(template, &copy).expect("copying the template");
        copy
    }

    /// A fresh copy of the raw reference for a write case (each write case starts from a
    /// copy, so all cases have pages made the same way).
    fn raw_for_case(&self, w: Workload) -> PathBuf {
        if !w.write {
            return self.raw.clone();
        }
        let copy = self.dir.join("raw-copy.raw");
        std::fs::copy(&self.raw, &copy).expect("copying the raw reference");
        copy
    }

    /// The `qemu-img bench` step for requests of `req` bytes, in bytes.
    fn step(&self, random: bool, req: u64) -> u64 {
        if !random {
            return req;
        }
        let blocks = self.size / req;
        let mut p = (blocks as f64 * 0.618) as u64 | 1;
        while gcd(p, blocks) != 1 {
            p += 2;
        }
        p * req
    }
}

/// Writes `path` out, drops it from the page cache and reads it back in sequentially.
fn recache(path: &Path) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut f = std::fs::File::open(path).expect("opening an image");
    f.sync_all().expect("syncing an image");
    // SAFETY: advice on a descriptor this function owns; no memory is passed.
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise");
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf).expect("reading an image") > 0 {}
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Requests per slice of the interleaved ours/raw pass.
const SLICE: u64 = 256;

/// Seconds for the workload's requests through `disks` (our overlay, our raw file), wall and
/// on a CPU (this thread's CPU time, which time spent preempted by the machine's other work
/// does not inflate), interleaved: slices of [`SLICE`] requests alternate between the two
/// (which goes first alternates too), each timed. Both are flushed after the clocks stop.
fn ours_and_raw(
    mut disks: [Box<dyn BlockBackend>; 2],
    mem: &GuestMemoryMmap,
    w: Workload,
    step: u64,
    req: u64,
) -> [[f64; 2]; 2] {
    let size = disks[0].size();
    assert_eq!(size, disks[1].size(), "overlay and raw file differ in size");
    let buf = [mem
        .get_slice(GuestAddress(0), req as usize)
        .expect("guest buffer")];
    let count = size / req;
    let (mut t, mut cpu) = ([0.0; 2], [0.0; 2]);
    let mut offsets = [0u64; 2];
    for slice in 0..count.div_ceil(SLICE) {
        let n = SLICE.min(count - slice * SLICE);
        for k in 0..2 {
            let d = (k + slice as usize) % 2;
            let (disk, offset) = (&mut disks[d], &mut offsets[d]);
            let (start, c) = (Instant::now(), thread_cpu());
            for _ in 0..n {
                if w.write {
                    disk.write_from_guest(&buf, *offset).expect("write");
                } else {
                    disk.read_to_guest(&buf, *offset).expect("read");
                }
                *offset = (*offset + step) % size;
            }
            t[d] += start.elapsed().as_secs_f64();
            cpu[d] += thread_cpu() - c;
        }
    }
    for d in &mut disks {
        d.flush().expect("flush");
    }
    [t, cpu]
}

/// Seconds of the calling thread's CPU time so far.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec the call fills.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// Seconds `qemu-img bench` reports for the workload on `image`, with QEMU's `aio` backend
/// `aio` (`threads`, its default, or `io_uring`).
fn qemu(image: &Path, w: Workload, step: u64, count: u64, req: u64, aio: &str) -> f64 {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["bench", "-f", "qcow2", "-t", "writeback", "-d", "1"])
        .args([
            "-s",
            &req.to_string(),
            "-i",
            aio,
            "-S",
            &step.to_string(),
            "-c",
            &count.to_string(),
        ]);
    if w.write {
        cmd.args(["-w", &format!("--pattern={PATTERN}")]);
    }
    let out = run(cmd.arg(image));
    out.split("Run completed in ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no time in qemu-img bench output: {out}"))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds per round of a workload: ours, QEMU `aio=threads`, QEMU `aio=io_uring`, our raw
/// file (wall), then ours and our raw file on a CPU.
type Times = [Vec<f64>; 6];

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(64);
    let rounds = args.get(1).copied().unwrap_or(9) as usize;
    let req = args.get(2).map_or(REQUEST, |kib| kib << 10);
    // On the target's file system (ext4 here), as the launcher's images are.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tmp")
        .join(format!("qcow2-overlay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let images = Images::make(&dir, mib);
    let mem =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), req as usize)]).expect("guest memory");
    mem.write_slice(&vec![PATTERN; req as usize], GuestAddress(0))
        .expect("filling the buffer");
    let count = images.size / req;
    let mut times: Vec<Times> = vec![Default::default(); WORKLOADS.len()];
    for round in 0..rounds {
        for (wi, &w) in WORKLOADS.iter().enumerate() {
            let step = images.step(w.random, req);
            // Three runs: ours and raw interleaved, QEMU threads, QEMU io_uring.
            for k in 0..3 {
                match (k + round + wi) % 3 {
                    0 => {
                        let img = images.for_case(w, "ours");
                        let overlay =
                            open_image(&img, !w.write, CacheMode::Writeback, &[&images.base])
                                .expect("opening the overlay");
                        let raw = open_image(
                            &images.raw_for_case(w),
                            !w.write,
                            CacheMode::Writeback,
                            &[],
                        )
                        .expect("opening the raw file");
                        let [[o, r], [oc, rc]] = ours_and_raw([overlay, raw], &mem, w, step, req);
                        times[wi][0].push(o);
                        times[wi][3].push(r);
                        times[wi][4].push(oc);
                        times[wi][5].push(rc);
                    }
                    1 => times[wi][1].push(qemu(
                        &images.for_case(w, "qemu"),
                        w,
                        step,
                        count,
                        req,
                        "threads",
                    )),
                    _ => times[wi][2].push(qemu(
                        &images.for_case(w, "qemu"),
                        w,
                        step,
                        count,
                        req,
                        "io_uring",
                    )),
                }
            }
        }
        eprintln!("round {round} done");
    }
    let kiops = |t: &[f64]| count as f64 / median(t) / 1000.0;
    println!(
        "{} KiB requests through a qcow2 overlay on a raw base, {mib} MiB ({count} requests), median of {rounds} rounds",
        req >> 10
    );
    println!(
        "| workload | order | ours kIOPS | QEMU threads | QEMU io_uring | raw kIOPS | ours / QEMU | ours / raw | ours / raw, CPU time |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (w, [o, qt, qu, r, oc, rc]) in WORKLOADS.iter().zip(&times) {
        // Against the faster of QEMU's two backends in each round.
        let q: Vec<f64> = qt.iter().zip(qu).map(|(a, b)| a.min(*b)).collect();
        let vs = |ours: &[f64], other: &[f64]| {
            let ratios: Vec<f64> = ours.iter().zip(other).map(|(a, b)| b / a).collect();
            median(&ratios)
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2}x | {:.2}x |",
            w.name,
            if w.random { "random" } else { "sequential" },
            kiops(o),
            kiops(qt),
            kiops(qu),
            kiops(r),
            vs(o, &q),
            vs(o, r),
            vs(oc, rc)
        );
    }
    drop(images);
    let _ = std::fs::remove_dir_all(&dir);
}
