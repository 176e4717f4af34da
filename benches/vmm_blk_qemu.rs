//! kubevirt-vmm versus QEMU on the same PVH guest and the same raw disk: start -> guest exit,
//! and sequential 1 MiB virtio-blk writes (+ flush) and reads from the in-guest driver.
//!
//! Run: `cargo bench --bench vmm_blk_qemu` (optionally `-- <MiB per run> <runs> [tcg|kvm|both]`;
//! default 256 MiB, 9 runs, QEMU under both accelerators when `/dev/kvm` exists, else TCG;
//! at 64 MiB a read phase lasts ~8 ms and the medians swing by +-30 % on this machine).
//! Needs Debian's `qemu-system-x86` (`scripts/setup.sh` installs it); without
//! `qemu-system-x86_64` on PATH the bench says so and exits 0.
//!
//! The guest is one PVH ELF (`testguest::elf::pvh_elf`) booted by both VMMs with
//! `-kernel`/`BootSource::Linux`. Unlike `testguest::virtio_blk_stream`, which assumes
//! kubevirt-vmm's layout (disk in slot 1, every virtio region in a VMM-assigned BAR 0), this
//! driver discovers the device the portable way, so it runs unchanged under QEMU, whose
//! firmware (SeaBIOS) assigns the BARs and whose virtio-pci puts the modern regions in BAR 4:
//! it scans bus 0 through ports 0xCF8/0xCFC for a modern virtio-blk (1af4:1042), enables memory
//! decoding and bus mastering, walks the vendor capabilities for the common and notify regions
//! (whichever BAR they name, 32- or 64-bit), negotiates VERSION_1 and FLUSH, sets up one
//! 16-entry queue and then streams as `virtio_blk_stream` does at depth 1: one 1 MiB request,
//! notify, poll the used ring, no interrupts. FLUSH is negotiated because QEMU switches a disk
//! whose driver does not negotiate it to write-through (an fdatasync after every write).
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

use iced_x86::code_asm::{
    al, byte_ptr, dword_ptr, dx, eax, ebx, ecx, edi, edx, esi, ptr, qword_ptr, r8, r9, r10d, r11,
    r11d, r12, r12d, r12w, r13d, r14, rax, rbp, rbx, rcx, rdi, word_ptr,
};
use kubevirt_vmm::testguest::{GUEST_DATA_ADDR, GuestAsm, SERIAL_PORT, TestGuest, elf};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{BootSource, ConsoleConfig, ExitReason, KernelImage, LinuxBoot, Vm, VmConfig};

/// Bytes per request.
const IO_LEN: u32 = 1 << 20;
/// Guest RAM on both VMMs.
const MEMORY_MIB: u64 = 32;
const QBASE: u64 = 0x30_0000;
const BUF: u64 = 0x40_0000;
const STATUS: u64 = GUEST_DATA_ADDR + 0x20;
const ERRORS: u64 = GUEST_DATA_ADDR + 0x10;
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const F_FLUSH: u32 = 1 << 9;

/// Guest exit codes.
const EXIT_REQUEST_FAILED: u8 = 2;
const EXIT_NO_DEVICE: u8 = 3;
const EXIT_NO_CAPS: u8 = 4;
const EXIT_FEATURES_REFUSED: u8 = 5;
const EXIT_ABOVE_4G: u8 = 6;

fn exit_meaning(code: u8) -> &'static str {
    match code {
        0 => "ok",
        EXIT_REQUEST_FAILED => "a request completed with a non-zero status",
        EXIT_NO_DEVICE => "no modern virtio-blk (1af4:1042) on bus 0",
        EXIT_NO_CAPS => "no common or notify capability",
        EXIT_FEATURES_REFUSED => "the device refused FEATURES_OK",
        EXIT_ABOVE_4G => "a virtio region is above 4 GiB (the guest maps only the low 4 GiB)",
        _ => "unknown",
    }
}

/// The discovering streaming guest: `rounds` x 1 MiB written from sector 0, flush, read back.
fn stream_guest(rounds: u32) -> Result<TestGuest, Box<dyn std::error::Error>> {
    let mut g = GuestAsm::new("virtio_blk_stream_portable")?;
    let a = g.a();
    let mut cfg_read = a.create_label();
    let mut cfg_write = a.create_label();
    let mut cap_addr = a.create_label();
    let mut fail = a.create_label();
    let mut main = a.create_label();
    a.jmp(main)?;

    // cfg_read: EAX = config dword at R13D | ESI. Clobbers EDX.
    a.set_label(&mut cfg_read)?;
    a.mov(eax, r13d)?;
    a.or(eax, esi)?;
    a.mov(dx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(dx, 0xcfcu32)?;
    a.in_(eax, dx)?;
    a.ret()?;

    // cfg_write: config dword at R13D | ESI = ECX. Clobbers EAX, EDX.
    a.set_label(&mut cfg_write)?;
    a.mov(eax, r13d)?;
    a.or(eax, esi)?;
    a.mov(dx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(dx, 0xcfcu32)?;
    a.mov(eax, ecx)?;
    a.out(dx, eax)?;
    a.ret()?;

    // cap_addr: RAX = address of the region of the virtio capability at EBX (its BAR's base
    // plus its offset). Clobbers RDX, RSI, RDI, R11, R12.
    let mut bar32 = a.create_label();
    a.set_label(&mut cap_addr)?;
    a.lea(esi, ptr(rbx + 4))?;
    a.call(cfg_read)?;
    a.movzx(edi, al)?;
    a.lea(esi, ptr(rbx + 8))?;
    a.call(cfg_read)?;
    a.mov(r12d, eax)?;
    a.lea(esi, ptr(rdi * 4 + 0x10))?;
    a.call(cfg_read)?;
    a.mov(r11d, eax)?;
    a.and(r11d, 0xffff_fff0u32 as i32)?;
    a.and(eax, 6)?;
    a.cmp(eax, 4)?;
    a.jne(bar32)?;
    a.lea(esi, ptr(rdi * 4 + 0x14))?;
    a.call(cfg_read)?;
    a.shl(rax, 32)?;
    a.or(r11, rax)?;
    a.set_label(&mut bar32)?;
    a.lea(rax, ptr(r11 + r12))?;
    a.ret()?;

    // fail: exit with AL.
    a.set_label(&mut fail)?;
    a.mov(dx, u32::from(kubevirt_vmm::testguest::DEBUG_EXIT_PORT))?;
    a.out(dx, al)?;
    let mut spin = a.create_label();
    a.set_label(&mut spin)?;
    a.pause()?;
    a.jmp(spin)?;

    a.set_label(&mut main)?;
    // Scan bus 0, function 0 of each slot, for 1af4:1042.
    let mut scan = a.create_label();
    let mut found = a.create_label();
    a.mov(r13d, 0x8000_0000u32)?;
    a.set_label(&mut scan)?;
    a.xor(esi, esi)?;
    a.call(cfg_read)?;
    a.cmp(eax, 0x1042_1af4)?;
    a.je(found)?;
    a.add(r13d, 0x800)?;
    a.cmp(r13d, 0x8001_0000u32)?;
    a.jb(scan)?;
    a.mov(al, u32::from(EXIT_NO_DEVICE))?;
    a.jmp(fail)?;
    a.set_label(&mut found)?;
    // Command: memory space + bus master (QEMU drops DMA from a function that is not a bus
    // master); status bits written as 0 are left alone.
    a.mov(esi, 4u32)?;
    a.call(cfg_read)?;
    a.movzx(ecx, iced_x86::code_asm::ax)?;
    a.or(ecx, 6)?;
    a.mov(esi, 4u32)?;
    a.call(cfg_write)?;
    // Capabilities: R8 = common, R9 = notify, R10D = notify_off_multiplier.
    a.xor(r8, r8)?;
    a.xor(r9, r9)?;
    a.xor(r10d, r10d)?;
    a.mov(esi, 0x34u32)?;
    a.call(cfg_read)?;
    a.movzx(ebx, al)?;
    let mut cap_loop = a.create_label();
    let mut cap_next = a.create_label();
    let mut caps_done = a.create_label();
    let mut not_common = a.create_label();
    a.set_label(&mut cap_loop)?;
    a.and(ebx, 0xfc)?;
    a.jz(caps_done)?;
    a.mov(esi, ebx)?;
    a.call(cfg_read)?;
    a.mov(ecx, eax)?;
    a.cmp(al, 0x09)?;
    a.jne(cap_next)?;
    a.shr(eax, 24)?;
    a.cmp(eax, 1)?;
    a.jne(not_common)?;
    a.call(cap_addr)?;
    a.mov(r8, rax)?;
    a.jmp(cap_next)?;
    a.set_label(&mut not_common)?;
    a.cmp(eax, 2)?;
    a.jne(cap_next)?;
    a.call(cap_addr)?;
    a.mov(r9, rax)?;
    a.lea(esi, ptr(rbx + 16))?;
    a.call(cfg_read)?;
    a.mov(r10d, eax)?;
    a.set_label(&mut cap_next)?;
    a.mov(ebx, ecx)?;
    a.shr(ebx, 8)?;
    a.jmp(cap_loop)?;
    a.set_label(&mut caps_done)?;
    a.mov(al, u32::from(EXIT_NO_CAPS))?;
    a.test(r8, r8)?;
    a.jz(fail)?;
    a.test(r9, r9)?;
    a.jz(fail)?;
    a.mov(al, u32::from(EXIT_ABOVE_4G))?;
    a.mov(rcx, r8)?;
    a.or(rcx, r9)?;
    a.shr(rcx, 32)?;
    a.jnz(fail)?;

    // Zero the queue memory and the error counter (QEMU's firmware ran before us).
    a.mov(rdi, QBASE)?;
    a.mov(ecx, 0x4000u32 / 8)?;
    a.xor(eax, eax)?;
    a.rep().stosq()?;
    a.mov(dword_ptr(ERRORS), eax)?;

    // Reset, ACKNOWLEDGE, DRIVER; features VERSION_1 + FLUSH (if offered); FEATURES_OK.
    a.mov(r14, r8)?;
    for s in [0u32, 1, 3] {
        a.mov(byte_ptr(r14 + 0x14), s)?;
    }
    a.mov(dword_ptr(r14), 0u32)?;
    a.mov(eax, dword_ptr(r14 + 0x04))?;
    a.and(eax, F_FLUSH)?;
    a.mov(dword_ptr(r14 + 0x08), 0u32)?;
    a.mov(dword_ptr(r14 + 0x0c), eax)?;
    a.mov(dword_ptr(r14 + 0x08), 1u32)?;
    a.mov(dword_ptr(r14 + 0x0c), 1u32)?;
    a.mov(byte_ptr(r14 + 0x14), 0x0bu32)?;
    a.movzx(eax, byte_ptr(r14 + 0x14))?;
    a.test(al, 8)?;
    let mut features_ok = a.create_label();
    a.jnz(features_ok)?;
    a.mov(al, u32::from(EXIT_FEATURES_REFUSED))?;
    a.jmp(fail)?;
    a.set_label(&mut features_ok)?;
    // Queue 0: 16 entries at QBASE (descriptors), +0x1000 (avail), +0x2000 (used).
    a.mov(rbp, QBASE)?;
    a.mov(word_ptr(r14 + 0x16), 0u32)?;
    a.mov(word_ptr(r14 + 0x18), 16u32)?;
    a.mov(qword_ptr(r14 + 0x20), rbp)?;
    a.lea(rax, ptr(rbp + 0x1000))?;
    a.mov(qword_ptr(r14 + 0x28), rax)?;
    a.lea(rax, ptr(rbp + 0x2000))?;
    a.mov(qword_ptr(r14 + 0x30), rax)?;
    // R9 = notify address of queue 0: notify base + queue_notify_off * multiplier.
    a.movzx(eax, word_ptr(r14 + 0x1e))?;
    a.imul_2(eax, r10d)?;
    a.add(r9, rax)?;
    a.mov(word_ptr(r14 + 0x1c), 1u32)?;
    a.mov(byte_ptr(r14 + 0x14), 0x0fu32)?;

    // Descriptors: 0 header (QBASE + 0x3000) -> 1 data (BUF) -> 2 status; a flush is
    // 3 header (QBASE + 0x3010) -> 2 status.
    a.mov(rbx, STATUS)?;
    a.lea(rax, ptr(rbp + 0x3000))?;
    a.mov(qword_ptr(rbp), rax)?;
    a.mov(dword_ptr(rbp + 8), 16u32)?;
    a.mov(word_ptr(rbp + 12), 1u32)?;
    a.mov(word_ptr(rbp + 14), 1u32)?;
    a.mov(rax, BUF)?;
    a.mov(qword_ptr(rbp + 16), rax)?;
    a.mov(dword_ptr(rbp + 24), IO_LEN)?;
    a.mov(word_ptr(rbp + 30), 2u32)?;
    a.mov(qword_ptr(rbp + 32), rbx)?;
    a.mov(dword_ptr(rbp + 40), 1u32)?;
    a.mov(word_ptr(rbp + 44), 2u32)?;
    a.lea(rax, ptr(rbp + 0x3010))?;
    a.mov(qword_ptr(rbp + 48), rax)?;
    a.mov(dword_ptr(rbp + 56), 16u32)?;
    a.mov(word_ptr(rbp + 60), 1u32)?;
    a.mov(word_ptr(rbp + 62), 2u32)?;
    a.mov(dword_ptr(rbp + 0x3010), T_FLUSH)?;
    a.xor(r12d, r12d)?;

    let mark = |a: &mut iced_x86::code_asm::CodeAssembler, c: u8| {
        a.mov(dx, u32::from(SERIAL_PORT))?;
        a.mov(al, u32::from(c))?;
        a.out(dx, al)
    };
    // Submits the chain at `head`, notifies, polls the used ring; counts a bad status.
    let submit = |a: &mut iced_x86::code_asm::CodeAssembler, head: u32| {
        a.mov(byte_ptr(rbx), 0xffu32)?;
        a.mov(eax, r12d)?;
        a.and(eax, 15)?;
        a.mov(word_ptr(rbp + rax * 2 + 0x1004), head)?;
        a.inc(r12d)?;
        a.mov(word_ptr(rbp + 0x1002), r12w)?;
        a.mfence()?;
        a.mov(word_ptr(r9), 0u32)?;
        let mut poll = a.create_label();
        a.set_label(&mut poll)?;
        a.pause()?;
        a.movzx(eax, word_ptr(rbp + 0x2002))?;
        a.movzx(edx, r12w)?;
        a.cmp(eax, edx)?;
        a.jne(poll)?;
        let mut ok = a.create_label();
        a.cmp(byte_ptr(rbx), 0)?;
        a.je(ok)?;
        a.inc(dword_ptr(ERRORS))?;
        a.set_label(&mut ok)
    };

    // Write the data buffer once before timing, as a running guest's memory is populated:
    // otherwise the first read request pays the host's first-touch faults on it (~13 us a
    // page on KVM on PVM), which says nothing about the I/O path.
    a.mov(rdi, BUF)?;
    a.mov(ecx, IO_LEN / 8)?;
    a.mov(rax, 0x5a5a_5a5a_5a5a_5a5au64)?;
    a.rep().stosq()?;
    mark(a, b'1')?;
    for (kind, data_flags, phase) in [(T_OUT, 1u32, b'2'), (T_IN, 3, b'3')] {
        a.mov(dword_ptr(rbp + 0x3000), kind)?;
        a.mov(word_ptr(rbp + 28), data_flags)?;
        a.xor(ecx, ecx)?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.mov(eax, ecx)?;
        a.shl(rax, IO_LEN.trailing_zeros() - 9)?;
        a.mov(qword_ptr(rbp + 0x3008), rax)?;
        submit(a, 0)?;
        a.inc(ecx)?;
        a.cmp(ecx, rounds.max(1))?;
        a.jb(top)?;
        if kind == T_OUT {
            submit(a, 3)?;
        }
        mark(a, phase)?;
    }
    a.mov(al, u32::from(EXIT_REQUEST_FAILED))?;
    a.cmp(dword_ptr(ERRORS), 0)?;
    a.jne(fail)?;
    g.exit(0)?;
    Ok(g.finish()?)
}

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
    let block = Block::new(
        Box::new(RawFile::open(disk, false).expect("open disk")),
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

fn qemu_command(accel: Accel, elf: &Path, disk: &Path) -> Command {
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
            "file={},format=raw,if=none,id=d0,cache=writeback,aio=threads",
            disk.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=d0,disable-legacy=on"]);
    c
}

fn qemu(accel: Accel, elf: &Path, disk: &Path) -> Run {
    let mut cmd = qemu_command(accel, elf, disk);
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

    let dir = std::env::temp_dir().join(format!("vmm-blk-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (elf_path, disk) = (dir.join("stream.elf"), dir.join("disk.img"));
    let image = elf::pvh_elf(&stream_guest(mib).expect("assemble guest")).expect("PVH ELF");
    std::fs::write(&elf_path, &image).unwrap();
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(u64::from(mib) * u64::from(IO_LEN))
        .unwrap();

    println!(
        "{version}; kubevirt-vmm on KVM{}",
        if kubevirt_vmm::host_is_pvm() {
            " (PVM)"
        } else {
            ""
        }
    );
    println!(
        "guest: {} ({} bytes), {MEMORY_MIB} MiB RAM, raw disk {mib} MiB, virtio-blk-pci; {runs} runs",
        elf_path.display(),
        image.len()
    );
    for &accel in &accels {
        let cmd = qemu_command(accel, &elf_path, &disk);
        let line: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        println!("QEMU ({accel}): {}", line.join(" "));
    }

    let mut ours_runs = Vec::new();
    let mut qemu_runs: Vec<Vec<Run>> = accels.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        ours_runs.push(ours(&image, &disk));
        for (i, &accel) in accels.iter().enumerate() {
            qemu_runs[i].push(qemu(accel, &elf_path, &disk));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

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
    println!("medians of {runs} runs, {mib} x 1 MiB sequential requests, one in flight:");
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
    println!(
        "(ratios: QEMU time / ours, ours throughput / QEMU's; >= 1.0 = kubevirt-vmm at least as fast)"
    );
}
