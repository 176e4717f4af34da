//! qcow2 allocating writes, format layer only: 1 MiB sequential writes from guest memory into a
//! fresh `qemu-img create -f qcow2` image (64 KiB clusters, every write allocates 16 clusters)
//! through kubevirt-vmm's `Qcow2::write_from_guest` against QEMU's qcow2 driver doing the same
//! (`qemu-img bench -w -t writeback -s 1M -d 1`), and, as a reference, the same writes to a raw
//! file through `RawFile`. The timed part is the writes into the page cache, not the final
//! flush (the disk's speed, which `qemu-img bench` leaves out): ours flushes after the clock
//! stops. QEMU's time is what `qemu-img bench` reports for its run (process start and image
//! open excluded).
//!
//! A fourth case runs our writes with QEMU's structure ("handed off"): a worker thread owns the
//! image and does each write while the submitting thread sleeps until it completes, one
//! request in flight, as `qemu-img bench -d 1` does with its thread pool. On a loaded machine
//! a one-thread loop that never sleeps waits for a CPU for about half its wall time (printed
//! per round: on a CPU, runnable, preemptions); handed off, the same writes run at about their
//! CPU speed.
//!
//! Also reported: CPU time to write and flush (ours: the writing thread; QEMU: the
//! `qemu-img` process less a one-write run of it on a fresh image, i.e. less start, open and
//! close), and the best round of each. On this development machine (a VM on a shared host)
//! single rounds are bimodal for both sides alike: the same 256 MiB take 60-95 ms of CPU or
//! 250-520 ms, all of the difference in the kernel's copy into fresh page-cache pages
//! (`copy_folio_from_iter_atomic`), with no reclaim in `/proc/vmstat`; which side a slow round
//! hits decides a median of few rounds, so read the per-round ratios, the CPU times and the
//! best rounds together.
//!
//! Run: `cargo bench -p kubevirt-vmm --bench qcow2_write [-- <MiB per round> <rounds>
//! [overlay]]` (default 256 MiB, 9 rounds); with `overlay` the qcow2 images (ours and QEMU's)
//! are empty overlays over a raw base full of data, the launcher's containerDisk layout. Rounds run the four cases on fresh images in one directory
//! under the target dir, in an order that rotates each round; the closing lines give medians,
//! the medians of the per-round ratios and the best rounds, which docs/PERFORMANCE.md records.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use kubevirt_vmm::GuestMemoryMmap;
use kubevirt_vmm::virtio::block::{CacheMode, open_image};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

const REQUEST: usize = 1 << 20;

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

/// A new empty image at `path`; a qcow2 one over the raw `base` when there is one.
fn fresh(path: &Path, format: &str, mib: usize, base: Option<&Path>) {
    let _ = std::fs::remove_file(path);
    let mut cmd = Command::new("qemu-img");
    cmd.args(["create", "-q", "-f", format]);
    if let (Some(b), "qcow2") = (base, format) {
        cmd.args(["-F", "raw", "-b"]).arg(b);
    }
    run(cmd.arg(path).arg(format!("{mib}M")));
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

/// Seconds this thread has run on a CPU and waited runnable for one (`schedstat`).
fn schedstat() -> (f64, f64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s
        .split_whitespace()
        .map(|x| x.parse::<f64>().unwrap_or(0.0) * 1e-9);
    (f.next().unwrap_or(0.0), f.next().unwrap_or(0.0))
}

/// `getrusage(who)`.
fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: an all-zero rusage is valid; the call fills it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid rusage the call fills.
    unsafe { libc::getrusage(who, &mut u) };
    u
}

/// User + system seconds of the waited-for children so far.
fn children_cpu() -> f64 {
    let u = rusage(libc::RUSAGE_CHILDREN);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Seconds for `count` 1 MiB guest writes through kubevirt-vmm: the writes' wall time (the
/// flush after them not timed), and the CPU time of writes and flush.
fn ours(path: &Path, mem: &GuestMemoryMmap, count: usize, base: &[&Path]) -> (f64, f64) {
    let mut disk = open_image(path, false, CacheMode::Writeback, base).expect("opening the image");
    let slice = mem
        .get_slice(GuestAddress(0), REQUEST)
        .expect("guest buffer");
    let (start, cpu, sched) = (Instant::now(), thread_cpu(), schedstat());
    let preempted = rusage(libc::RUSAGE_THREAD).ru_nivcsw;
    for i in 0..count {
        disk.write_from_guest(&[slice], (i * REQUEST) as u64)
            .expect("write");
    }
    let wall = start.elapsed().as_secs_f64();
    let after = schedstat();
    eprintln!(
        "  {}: writes {:.0} ms wall = {:.0} ms on a CPU + {:.0} ms runnable, waiting for one ({} preemptions)",
        path.file_name().unwrap_or_default().to_string_lossy(),
        wall * 1e3,
        (after.0 - sched.0) * 1e3,
        (after.1 - sched.1) * 1e3,
        rusage(libc::RUSAGE_THREAD).ru_nivcsw - preempted
    );
    disk.flush().expect("flush");
    drop(disk);
    (wall, thread_cpu() - cpu)
}

/// [`ours`] with QEMU's structure: a worker thread owns the image and does each write, the
/// calling thread hands it one request at a time and sleeps until it completes (what
/// `qemu-img bench -d 1` does with its thread pool, and what a virtio-blk worker does between
/// a guest's requests). Seconds: the writes' wall time as the submitter sees it, and the
/// worker's CPU time for writes and flush.
fn ours_handed_off(path: &Path, mem: &GuestMemoryMmap, count: usize, base: &[&Path]) -> (f64, f64) {
    use std::sync::mpsc::channel;
    let (to_worker, requests) = channel::<Option<usize>>();
    let (to_submitter, completions) = channel::<()>();
    std::thread::scope(|s| {
        let worker = s.spawn(move || {
            let mut disk =
                open_image(path, false, CacheMode::Writeback, base).expect("opening the image");
            let slice = mem
                .get_slice(GuestAddress(0), REQUEST)
                .expect("guest buffer");
            let cpu = thread_cpu();
            while let Ok(Some(i)) = requests.recv() {
                disk.write_from_guest(&[slice], (i * REQUEST) as u64)
                    .expect("write");
                to_submitter.send(()).expect("submitter gone");
            }
            disk.flush().expect("flush");
            drop(disk);
            thread_cpu() - cpu
        });
        let start = Instant::now();
        for i in 0..count {
            to_worker.send(Some(i)).expect("worker gone");
            completions.recv().expect("worker gone");
        }
        let wall = start.elapsed().as_secs_f64();
        to_worker.send(None).expect("worker gone");
        (wall, worker.join().expect("worker panicked"))
    })
}

/// Seconds for the same writes through QEMU: what `qemu-img bench` reports (its writes'
/// wall time), and the CPU time of the whole `qemu-img` process (start, open, writes, the
/// flush at close).
fn qemu(path: &Path, count: usize) -> (f64, f64) {
    let (cpu, preempted) = (children_cpu(), rusage(libc::RUSAGE_CHILDREN).ru_nivcsw);
    let out = run(Command::new("qemu-img")
        .args([
            "bench",
            "-w",
            "-f",
            "qcow2",
            "-t",
            "writeback",
            "-s",
            "1M",
            "-d",
            "1",
            "-c",
            &count.to_string(),
        ])
        .arg(path));
    let cpu = children_cpu() - cpu;
    if count > 1 {
        eprintln!(
            "  qemu-img bench: writes {:.0} ms wall, whole process {:.0} ms on a CPU ({} preemptions)",
            wall_of(&out) * 1e3,
            cpu * 1e3,
            rusage(libc::RUSAGE_CHILDREN).ru_nivcsw - preempted
        );
    }
    (wall_of(&out), cpu)
}

/// The seconds in `qemu-img bench` output.
fn wall_of(out: &str) -> f64 {
    out.split("Run completed in ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no time in qemu-img bench output: {out}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let mib = args.first().copied().unwrap_or(256);
    let rounds = args.get(1).copied().unwrap_or(9);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tmp")
        .join(format!("qcow2-write-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), REQUEST)]).expect("guest memory");
    let data: Vec<u8> = (0..REQUEST).map(|i| (i * 7 + i / 4096) as u8).collect();
    mem.write_slice(&data, GuestAddress(0))
        .expect("filling the buffer");
    // `overlay`: the qcow2 images are empty overlays over a raw base full of data (the
    // launcher's containerDisk layout); every write still covers whole clusters.
    let base = std::env::args().any(|a| a == "overlay").then(|| {
        let b = dir.join("base.raw");
        std::fs::write(&b, vec![0x3cu8; mib << 20]).expect("writing the base");
        b
    });
    let bases: Vec<&Path> = base.iter().map(|b| b.as_path()).collect();
    let base = base.as_deref();
    let (q, r) = (dir.join("ours.qcow2"), dir.join("ours.raw"));
    let qq = dir.join("qemu.qcow2");
    // [case][round] (wall, CPU): 0 ours, 1 QEMU, 2 our raw file, 3 QEMU's fixed cost (one
    // write: start, open, close), subtracted from its CPU time, 4 ours handed off to a worker.
    let mut t: [Vec<(f64, f64)>; 5] = Default::default();
    for round in 0..rounds {
        for k in 0..4 {
            match (k + round) % 4 {
                0 => {
                    fresh(&q, "qcow2", mib, base);
                    t[0].push(ours(&q, &mem, mib, &bases));
                }
                1 => {
                    fresh(&qq, "qcow2", mib, base);
                    t[1].push(qemu(&qq, mib));
                    fresh(&qq, "qcow2", mib, base);
                    t[3].push(qemu(&qq, 1));
                }
                2 => {
                    fresh(&r, "raw", mib, None);
                    t[2].push(ours(&r, &mem, mib, &[]));
                }
                _ => {
                    fresh(&q, "qcow2", mib, base);
                    t[4].push(ours_handed_off(&q, &mem, mib, &bases));
                }
            }
        }
        let mibs = |c: usize| mib as f64 / t[c][round].0;
        eprintln!(
            "round {round}: ours {:.0} MiB/s, handed off {:.0} MiB/s, QEMU {:.0} MiB/s, raw {:.0} MiB/s; CPU ours {:.0} ms, handed off {:.0} ms, QEMU {:.0} ms, raw {:.0} ms",
            mibs(0),
            mibs(4),
            mibs(1),
            mibs(2),
            t[0][round].1 * 1e3,
            t[4][round].1 * 1e3,
            (t[1][round].1 - t[3][round].1) * 1e3,
            t[2][round].1 * 1e3,
        );
    }
    let wall = |c: usize| median(&mut t[c].iter().map(|x| x.0).collect::<Vec<_>>());
    let cpu = |c: usize| {
        let mut v: Vec<f64> = t[c]
            .iter()
            .zip(&t[3])
            .map(|(x, base)| if c == 1 { x.1 - base.1 } else { x.1 })
            .collect();
        median(&mut v)
    };
    // Ratios of the pairs measured in the same round, then their median.
    let ratio = |a: usize, b: usize| {
        let mut v: Vec<f64> = t[a].iter().zip(&t[b]).map(|(x, y)| y.0 / x.0).collect();
        median(&mut v)
    };
    let (o, qm, rw) = (wall(0), wall(1), wall(2));
    println!(
        "qcow2 allocating 1 MiB writes{}, {mib} MiB, median of {rounds} rounds: kubevirt-vmm {:.0} MiB/s, QEMU {:.0} MiB/s ({:.2}x; per-round ratios {:.2}x), raw file {:.0} MiB/s (qcow2 {:.2}x raw; per round {:.2}x)",
        if base.is_some() {
            " into an overlay"
        } else {
            ""
        },
        mib as f64 / o,
        mib as f64 / qm,
        qm / o,
        ratio(0, 1),
        mib as f64 / rw,
        rw / o,
        ratio(0, 2),
    );
    println!(
        "ours handed off to a worker thread as QEMU does: {:.0} MiB/s ({:.2}x QEMU; per-round ratios {:.2}x), CPU {:.0} ms",
        mib as f64 / wall(4),
        qm / wall(4),
        ratio(4, 1),
        cpu(4) * 1e3
    );
    println!(
        "CPU time to write and flush {mib} MiB, median: kubevirt-vmm {:.0} ms, QEMU {:.0} ms (process less its one-write run), raw file {:.0} ms",
        cpu(0) * 1e3,
        cpu(1) * 1e3,
        cpu(2) * 1e3
    );
    // The best round of each: the cost with nothing else in the way (see the module docs).
    let best = |c: usize| t[c].iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
    println!(
        "best of {rounds} rounds: kubevirt-vmm {:.0} MiB/s, handed off {:.0} MiB/s, QEMU {:.0} MiB/s ({:.2}x; handed off {:.2}x), raw file {:.0} MiB/s",
        mib as f64 / best(0),
        mib as f64 / best(4),
        mib as f64 / best(1),
        best(1) / best(0),
        best(1) / best(4),
        mib as f64 / best(2)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
