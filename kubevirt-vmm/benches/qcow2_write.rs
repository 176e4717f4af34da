//! qcow2 allocating writes, format layer only: 1 MiB sequential writes from guest memory into a
//! fresh `qemu-img create -f qcow2` image (64 KiB clusters, every write allocates 16 clusters)
//! through kubevirt-vmm's `Qcow2::write_from_guest` against QEMU's qcow2 driver doing the same
//! (`qemu-img bench -w -t writeback -s 1M -d 1`), and, as a reference, the same writes to a raw
//! file through `RawFile`. The timed part is the writes into the page cache, not the final
//! flush (the disk's speed, which `qemu-img bench` leaves out): ours flushes after the clock
//! stops. No VM and no guest in the loop, so the numbers move far less than the whole-VM
//! comparison (`vmm_blk_qemu`).
//!
//! Run: `cargo bench -p kubevirt-vmm --bench qcow2_write [-- <MiB per round> <rounds>]`
//! (default 256 MiB, 9 rounds). Rounds interleave the three cases on fresh images in one
//! directory under the target dir; the closing lines give medians and ratios that
//! docs/PERFORMANCE.md records. QEMU's time is what `qemu-img bench` reports for its run
//! (process start and image open excluded).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use kubevirt_vmm::virtio::block::{CacheMode, open_image};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

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

fn fresh(path: &Path, format: &str, mib: usize) {
    let _ = std::fs::remove_file(path);
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .arg(path)
        .arg(format!("{mib}M")));
}

/// Seconds for `count` 1 MiB guest writes through kubevirt-vmm (then a flush, not timed).
fn ours(path: &Path, mem: &GuestMemoryMmap, count: usize) -> f64 {
    let mut disk = open_image(path, false, CacheMode::Writeback, &[]).expect("opening the image");
    let slice = mem
        .get_slice(GuestAddress(0), REQUEST)
        .expect("guest buffer");
    let start = Instant::now();
    for i in 0..count {
        disk.write_from_guest(&[slice], (i * REQUEST) as u64)
            .expect("write");
    }
    let t = start.elapsed().as_secs_f64();
    disk.flush().expect("flush");
    drop(disk);
    t
}

/// Seconds QEMU's `qemu-img bench` reports for the same writes.
fn qemu(path: &Path, count: usize) -> f64 {
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
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), REQUEST)]).expect("guest memory");
    let data: Vec<u8> = (0..REQUEST).map(|i| (i * 7 + i / 4096) as u8).collect();
    mem.write_slice(&data, GuestAddress(0))
        .expect("filling the buffer");
    let (q, r) = (dir.join("ours.qcow2"), dir.join("ours.raw"));
    let qq = dir.join("qemu.qcow2");
    let (mut t_ours, mut t_qemu, mut t_raw) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        fresh(&q, "qcow2", mib);
        t_ours.push(ours(&q, &mem, mib));
        fresh(&qq, "qcow2", mib);
        t_qemu.push(qemu(&qq, mib));
        fresh(&r, "raw", mib);
        t_raw.push(ours(&r, &mem, mib));
        eprintln!(
            "round {round}: ours {:.0} MiB/s, QEMU {:.0} MiB/s, raw {:.0} MiB/s",
            mib as f64 / t_ours[round],
            mib as f64 / t_qemu[round],
            mib as f64 / t_raw[round]
        );
    }
    let (o, qm, rw) = (median(&mut t_ours), median(&mut t_qemu), median(&mut t_raw));
    println!(
        "qcow2 allocating 1 MiB writes, {mib} MiB, median of {rounds} rounds: kubevirt-vmm {:.0} MiB/s, QEMU {:.0} MiB/s ({:.2}x), raw file {:.0} MiB/s (qcow2 {:.2}x raw)",
        mib as f64 / o,
        mib as f64 / qm,
        qm / o,
        mib as f64 / rw,
        rw / o
    );
    let _ = std::fs::remove_dir_all(&dir);
}
