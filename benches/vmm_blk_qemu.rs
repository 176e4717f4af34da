//! kubevirt-vmm versus QEMU on the same PVH guest and the same raw disk: start -> guest exit,
//! and sequential 1 MiB virtio-blk writes (+ flush) and reads from the in-guest driver.
//!
//! Run: `cargo bench --bench vmm_blk_qemu` (optionally `-- <MiB per run> <runs> [tcg|kvm|both]
//! [raw|qcow2|overlay|all]`; default 256 MiB, 9 runs, QEMU under both accelerators when
//! `/dev/kvm` exists, else TCG, every disk format; at 64 MiB a read phase lasts ~8 ms and the
//! medians swing by +-30 % on this machine).
//!
//! Disk formats, each a fresh image per run so both VMMs start from the same bytes: `raw`; `qcow2`
//! (an empty `qemu-img create -f qcow2` image: the write phase allocates every cluster, the read
//! phase reads allocated clusters); `overlay` (an empty qcow2 overlay on a raw base, as a
//! containerDisk VMI gets: writes allocate in the overlay, reads hit what was just written).
//! Needs Debian's `qemu-system-x86` (`scripts/setup.sh` installs it); without
//! `qemu-system-x86_64` on PATH the bench says so and exits 0.
//!
//! The guest is one PVH ELF (`testguest::elf::pvh_elf`) of `testguest::virtio_blk_stream` at
//! depth 1, booted by both VMMs with `-kernel`/`BootSource::Linux`. Its driver discovers the
//! disk the portable way (`testguest::virtio_pci`), so it runs unchanged under QEMU, whose
//! firmware (SeaBIOS) assigns the BARs and whose virtio-pci puts the modern regions in BAR 4.
//! It streams one 1 MiB request at a time (notify, poll the used ring, no interrupts) and
//! negotiates FLUSH, since QEMU switches a disk whose driver does not to write-through.
//!
//! The data buffer is written once before timing starts (so neither VMM's first read pays
//! first-touch faults on it). Phases are marked by one byte on COM1 ('1' before the writes,
//! '2' after the writes and the flush, '3' after the reads), which both VMMs pass to a pipe
//! that this process timestamps.
//! The guest exits through the debug-exit port with 0, or with a code that says what failed.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use kubevirt_vmm::testguest::elf;
use kubevirt_vmm::testguest::virtio_blk_stream::{
    Marks, STREAM_IO_LEN, exit_meaning, virtio_blk_stream,
};
use kubevirt_vmm::virtio::block::{Block, CacheMode, open_image};
use kubevirt_vmm::{BootSource, ConsoleConfig, ExitReason, KernelImage, LinuxBoot, Vm, VmConfig};

/// Guest RAM on both VMMs.
const MEMORY_MIB: u64 = 32;

/// One run's timestamps, relative to its start.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Start -> '1' (VMM set-up, firmware, PVH stub, device discovery and set-up).
    ready: Duration,
    /// '1' -> '2'.
    write: Duration,
    /// '2' -> '3'.
    read: Duration,
    /// Start -> the VMM reports the guest's exit.
    exit: Duration,
}

/// Reads a pipe byte by byte, sending each byte with the time it arrived.
fn timestamp_bytes(mut r: impl Read + Send + 'static) -> Receiver<(u8, Instant)> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while let Ok(1) = r.read(&mut b) {
            if tx.send((b[0], Instant::now())).is_err() {
                break;
            }
        }
    });
    rx
}

/// The times of marks '1', '2' and '3' (later bytes are ignored; missing marks panic).
fn marks(rx: &Receiver<(u8, Instant)>, start: Instant) -> [Duration; 3] {
    let mut at = [None; 3];
    while at.iter().any(Option::is_none) {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok((c @ b'1'..=b'3', t)) => {
                at[usize::from(c - b'1')].get_or_insert(t - start);
            }
            Ok(_) => {}
            Err(e) => panic!("guest marks missing ({e}): {at:?}"),
        }
    }
    at.map(|t| t.expect("mark"))
}

/// A disk image format the bench compares.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Raw,
    Qcow2,
    Overlay,
}

impl Format {
    const ALL: [Format; 3] = [Format::Raw, Format::Qcow2, Format::Overlay];

    fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Overlay => "qcow2 overlay on raw",
        }
    }

    /// QEMU's `format=` for the top image.
    fn qemu(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 | Format::Overlay => "qcow2",
        }
    }

    /// Writes a fresh image of `bytes` at `disk` (and its raw base next to it for an overlay).
    fn create(self, disk: &Path, bytes: u64) {
        let _ = std::fs::remove_file(disk);
        let _ = std::fs::remove_file(disk.with_extension("base"));
        let qemu_img = |args: &[&str]| {
            let out = Command::new("qemu-img")
                .args(args)
                .output()
                .expect("run qemu-img");
            assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
        };
        let size = bytes.to_string();
        let path = disk.to_str().expect("UTF-8 temp path");
        match self {
            Format::Raw => std::fs::File::create(disk).unwrap().set_len(bytes).unwrap(),
            Format::Qcow2 => qemu_img(&["create", "-q", "-f", "qcow2", path, &size]),
            Format::Overlay => {
                let base = disk.with_extension("base");
                std::fs::File::create(&base)
                    .unwrap()
                    .set_len(bytes)
                    .unwrap();
                let base = base.to_str().expect("UTF-8 temp path");
                qemu_img(&["create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", path]);
            }
        }
    }
}

fn ours(elf: &[u8], disk: &Path) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let rx = timestamp_bytes(reader);
    let start = Instant::now();
    let boot = BootSource::Linux(LinuxBoot {
        kernel: KernelImage::Bytes(elf.to_vec()),
        initrd: None,
        cmdline: String::new(),
    });
    let config = VmConfig::new(1, MEMORY_MIB << 20, boot)
        .with_serial(ConsoleConfig::Fd(writer.into()))
        .with_debug_exit();
    // open_image refuses a backing file the image does not name: only the overlay has one.
    let base = disk.with_extension("base");
    let backing: &[&Path] = if base.exists() { &[&base] } else { &[] };
    let block = Block::new(
        open_image(disk, false, CacheMode::Writeback, backing).expect("open disk"),
        "bench",
    );
    let vm = Vm::builder(config)
        .virtio_device(Box::new(block))
        .build()
        .expect("build VM");
    vm.start().expect("start");
    let reason = vm
        .wait_timeout(Duration::from_secs(600))
        .unwrap_or_else(|| vm.stop());
    let exit = start.elapsed();
    if let ExitReason::DebugExit { code } = reason {
        assert_eq!(
            code,
            0,
            "kubevirt-vmm: guest failed: {}",
            exit_meaning(code)
        );
    } else {
        panic!("kubevirt-vmm: guest ended with {reason:?}");
    }
    let [m1, m2, m3] = marks(&rx, start);
    Run {
        ready: m1,
        write: m2 - m1,
        read: m3 - m2,
        exit,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Accel {
    Tcg,
    Kvm,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Tcg => "TCG, emulated",
            Accel::Kvm => "KVM",
        })
    }
}

fn qemu_command(accel: Accel, elf: &Path, disk: &Path, format: Format) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    match accel {
        Accel::Tcg => c.args(["-machine", "q35,accel=tcg"]),
        // PVM refuses QEMU's write of MSR 0x10a (IA32_ARCH_CAPABILITIES).
        Accel::Kvm => c.args([
            "-machine",
            "q35,accel=kvm",
            "-cpu",
            "host,-arch-capabilities",
        ]),
    };
    c.args(["-nodefaults", "-m", &MEMORY_MIB.to_string()])
        .args(["-display", "none", "-no-reboot", "-monitor", "none"])
        .args(["-serial", "stdio"])
        .arg("-kernel")
        .arg(elf)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=1"])
        .arg("-drive")
        .arg(format!(
            "file={},format={},if=none,id=d0,cache=writeback,aio=threads",
            disk.display(),
            format.qemu()
        ))
        .args(["-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]);
    c
}

fn qemu(accel: Accel, elf: &Path, disk: &Path, format: Format) -> Run {
    let mut cmd = qemu_command(accel, elf, disk, format);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn qemu-system-x86_64");
    let rx = timestamp_bytes(child.stdout.take().expect("stdout"));
    let status = child.wait().expect("wait for QEMU");
    let exit = start.elapsed();
    // isa-debug-exit: QEMU exits with (code << 1) | 1.
    let code = status.code().unwrap_or(-1);
    assert!(
        code == 1,
        "QEMU ({accel}) exited with {status}: guest code {} = {}",
        code >> 1,
        exit_meaning(u8::try_from(code >> 1).unwrap_or(255))
    );
    let [m1, m2, m3] = marks(&rx, start);
    Run {
        ready: m1,
        write: m2 - m1,
        read: m3 - m2,
        exit,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let num = |i: usize, d: u32| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let mib = num(0, 256);
    let runs = num(1, 9).max(1);
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!(
            "SKIPPED vmm_blk_qemu: qemu-system-x86_64 is not installed \
             (Debian package qemu-system-x86; scripts/setup.sh installs it)"
        );
        return;
    }
    let version = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    let accels: Vec<Accel> = match args.get(2).map(String::as_str) {
        Some("tcg") => vec![Accel::Tcg],
        Some("kvm") => vec![Accel::Kvm],
        _ if std::path::Path::new("/dev/kvm").exists() => vec![Accel::Tcg, Accel::Kvm],
        _ => vec![Accel::Tcg],
    };

    let formats: Vec<Format> = match args.get(3).map(String::as_str) {
        Some("raw") => vec![Format::Raw],
        Some("qcow2") => vec![Format::Qcow2],
        Some("overlay") => vec![Format::Overlay],
        _ => Format::ALL.to_vec(),
    };

    let dir = kubevirt_testsupport::tempdir("vmm-blk-qemu");
    let (elf_path, disk) = (dir.join("stream.elf"), dir.join("disk.img"));
    let bytes = u64::from(mib) * u64::from(STREAM_IO_LEN);
    let image = elf::pvh_elf(&virtio_blk_stream(mib, 1, Marks::Serial).expect("assemble guest"))
        .expect("PVH ELF");
    std::fs::write(&elf_path, &image).unwrap();

    println!(
        "{version}; kubevirt-vmm on KVM{}",
        if kubevirt_vmm::host_is_pvm() {
            " (PVM)"
        } else {
            ""
        }
    );
    println!(
        "guest: {} ({} bytes), {MEMORY_MIB} MiB RAM, disk {mib} MiB, virtio-blk-pci; {runs} runs",
        elf_path.display(),
        image.len()
    );
    for &accel in &accels {
        let cmd = qemu_command(accel, &elf_path, &disk, formats[0]);
        let line: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        println!("QEMU ({accel}): {}", line.join(" "));
    }
    for &format in &formats {
        compare(format, runs, mib, &accels, &image, &elf_path, &disk, bytes);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "(ratios: QEMU time / ours, ours throughput / QEMU's; >= 1.0 = kubevirt-vmm at least as fast)"
    );
}

/// `runs` interleaved runs of each VMM on fresh `format` images, and their medians and ratios.
#[allow(clippy::too_many_arguments)]
fn compare(
    format: Format,
    runs: u32,
    mib: u32,
    accels: &[Accel],
    image: &[u8],
    elf_path: &Path,
    disk: &Path,
    bytes: u64,
) {
    let mut ours_runs = Vec::new();
    let mut qemu_runs: Vec<Vec<Run>> = accels.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        format.create(disk, bytes);
        ours_runs.push(ours(image, disk));
        for (i, &accel) in accels.iter().enumerate() {
            format.create(disk, bytes);
            qemu_runs[i].push(qemu(accel, elf_path, disk, format));
        }
    }

    let mbps = |d: Duration| f64::from(mib) / d.as_secs_f64();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let summary = |rs: &[Run]| {
        (
            median(rs.iter().map(|r| ms(r.ready)).collect()),
            median(rs.iter().map(|r| ms(r.exit)).collect()),
            median(rs.iter().map(|r| mbps(r.write)).collect()),
            median(rs.iter().map(|r| mbps(r.read)).collect()),
        )
    };
    // The slowest and fastest run of each column, to show the spread behind the median.
    let spread = |rs: &[Run]| {
        let range = |v: Vec<f64>| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{lo:.0}-{hi:.0}")
        };
        println!(
            "{:<22} {:>12} {:>12} {:>14} {:>14}",
            "  range",
            range(rs.iter().map(|r| ms(r.ready)).collect()),
            range(rs.iter().map(|r| ms(r.exit)).collect()),
            range(rs.iter().map(|r| mbps(r.write)).collect()),
            range(rs.iter().map(|r| mbps(r.read)).collect()),
        );
    };
    let (o_ready, o_exit, o_w, o_r) = summary(&ours_runs);
    println!(
        "{} disk: medians of {runs} runs, {mib} x 1 MiB sequential requests, one in flight:",
        format.name()
    );
    println!(
        "{:<22} {:>12} {:>12} {:>14} {:>14}",
        "", "start->ready", "start->exit", "write+flush", "read"
    );
    println!(
        "{:<22} {:>9.1} ms {:>9.1} ms {:>8.1} MiB/s {:>8.1} MiB/s",
        "kubevirt-vmm (KVM)", o_ready, o_exit, o_w, o_r
    );
    spread(&ours_runs);
    for (i, accel) in accels.iter().enumerate() {
        let (q_ready, q_exit, q_w, q_r) = summary(&qemu_runs[i]);
        let name = format!("QEMU ({accel})");
        println!("{name:<22} {q_ready:>9.1} ms {q_exit:>9.1} ms {q_w:>8.1} MiB/s {q_r:>8.1} MiB/s");
        spread(&qemu_runs[i]);
        println!(
            "{:<22} {:>11.2}x {:>11.2}x {:>13.2}x {:>13.2}x",
            "  ratio ours vs it",
            q_ready / o_ready,
            q_exit / o_exit,
            o_w / q_w,
            o_r / q_r
        );
    }
}
