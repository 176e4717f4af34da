//! A hostile guest at CPL 3 hammers every device register the VM has (serial, i8042, CMOS,
//! fw_cfg ports and DMA, PCI config through 0xCF8/0xCFC and ECAM, the virtio-pci regions of
//! blk, net, rng and console) with random values from a seeded generator, and points the
//! devices' rings and DMA at scratch memory it keeps filling with garbage. The VM boots no
//! firmware but is given a fw_cfg device of its own (`VmConfig::with_fw_cfg_file`); the guest
//! proves it reached it (the "QEMU" signature through the ports and by DMA, in every VM) and
//! feeds it random DMA descriptors. The VMM must not panic, must not spin (a watchdog fails the
//! test when the guest's heartbeat stops), and must stay responsive (the test pauses and
//! resumes the VM while the guest hammers; `kubevirt-launcher`'s `hostile_control` test does
//! the same through the control socket of a launcher process).
//!
//! Bounded for the normal run: up to 1,000,000 operations, 50,000 per VM (a fresh seed and
//! fresh devices each), but no new VM after [`TIME_BUDGET`] — as many as the machine manages
//! in under a minute (about 15,000 a second on the 2-core PVM machine when quiet). Set
//! `KUBEVIRT_HOSTILE_OPS` for a long run of exactly that many, without the time budget
//! (`KUBEVIRT_HOSTILE_SEED` picks the first seed); docs/RELIABILITY.md records runs.

mod common;

use common::Datagram;

use kubevirt_vmm::devices::fw_cfg::FW_CFG_SELECTOR_PORT;
use kubevirt_vmm::testguest::hostile::{self, Target};
use kubevirt_vmm::testguest::{DEBUG_EXIT_PORT, REPORT_PORT};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::virtio::console::Console;
use kubevirt_vmm::virtio::net::{Net, NetConfig};
use kubevirt_vmm::virtio::pci::MSIX_TABLE_OFFSET;
use kubevirt_vmm::virtio::rng::Rng;
use kubevirt_vmm::virtio::status;
use kubevirt_vmm::{BusDevice, ConsoleConfig, ExitReason, Vm, VmState};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MEMORY: u64 = 8 << 20;
/// The guest's scratch area: the upper half of RAM (code, stack, data and page tables live
/// below 4 MiB).
const SCRATCH: (u64, u64) = (4 << 20, 4 << 20);
/// No heartbeat for this long while the VM runs: the VMM is stuck.
const WATCHDOG: Duration = Duration::from_secs(20);
/// The default run starts no VM after this long.
const TIME_BUDGET: Duration = Duration::from_secs(50);
/// How often the test pauses and resumes the hammering guest.
const PAUSE_EVERY: Duration = Duration::from_secs(1);

/// The heartbeat: the last count the guest reported, and how many reports; and what it
/// reported of fw_cfg.
#[derive(Default)]
struct Heartbeat {
    last: AtomicU64,
    beats: AtomicU64,
    /// The signature read through fw_cfg's data port, and by DMA.
    fw_cfg_port: AtomicU64,
    fw_cfg_dma: AtomicU64,
    /// Random fw_cfg DMA descriptors the device answered.
    fw_cfg_answered: AtomicU64,
}

struct HeartbeatPort(Arc<Heartbeat>);

impl BusDevice for HeartbeatPort {
    fn read(&mut self, _: u64, _: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _: u64, offset: u64, data: &[u8]) {
        let mut v = [0u8; 8];
        let n = data.len().min(8);
        v[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(v);
        let slot = match u16::try_from(offset) {
            Ok(hostile::REPORT_FW_CFG_PORT) => &self.0.fw_cfg_port,
            Ok(hostile::REPORT_FW_CFG_DMA) => &self.0.fw_cfg_dma,
            Ok(hostile::REPORT_FW_CFG_ANSWERED) => &self.0.fw_cfg_answered,
            _ => {
                self.0.last.store(v, Ordering::SeqCst);
                self.0.beats.fetch_add(1, Ordering::SeqCst);
                return;
            }
        };
        slot.store(v, Ordering::SeqCst);
    }
}

/// fw_cfg's signature as the guest's 4-byte read of it reports it.
const QEMU: u64 = 0x554d_4551;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The VM with every device kind, and the test's ends of its backends.
fn build(dir: &std::path::Path, beat: &Arc<Heartbeat>) -> (Vm, UnixDatagram, OwnedFd) {
    let guest = hostile::hostile().unwrap();
    // A fw_cfg device of its own (the VM boots no firmware), with a file to point DMA at.
    let mut config = guest.vm_config(1, ConsoleConfig::Sink).with_fw_cfg_file(
        "opt/kubevirt/hostile",
        (0..=255u8).cycle().take(5000).collect(),
    );
    config.memory_size = MEMORY;
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    theirs.set_nonblocking(true).unwrap();
    ours.set_nonblocking(true).unwrap();
    let (console_in, console_out) = std::io::pipe().unwrap();
    let vm = Vm::builder(config)
        .pio_device(
            REPORT_PORT,
            hostile::REPORT_SPAN,
            Arc::new(Mutex::new(HeartbeatPort(beat.clone()))),
        )
        .virtio_device(Box::new(Block::new(
            Box::new(RawFile::open(&disk, false).unwrap()),
            "HOSTILE",
        )))
        .virtio_device(Box::new(Net::new(NetConfig {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            backend: Box::new(Datagram(theirs)),
        })))
        .virtio_device(Box::new(Rng::new()))
        .virtio_device(Box::new(Console::new(Box::new(console_out)).unwrap()))
        .build()
        .unwrap();
    (vm, ours, OwnedFd::from(console_in))
}

/// Every register range on the VM's port bus, but the ones whose job is to end the VM (the
/// debug-exit port, the ACPI sleep and reset registers, the i8042 command port with its reset
/// command: only the i8042's data port stays) or to watch the guest (the heartbeat); PCI
/// configuration through ECAM, one range per present function; each virtio function's
/// common, ISR, device and notify regions (read from its BAR 0 as the guest placed it), not
/// its MSI-X table: a random MSI can be an INIT or NMI that stops a guest without an IDT, which
/// is the guest's business; the ACPI GED.
fn targets(vm: &Vm) -> Vec<Target> {
    let mut out = Vec::new();
    for r in vm.buses().pio.ranges() {
        let span = r.base..r.base + r.len;
        if span.contains(&0x64) {
            out.push(Target {
                base: r.base,
                len: 0x64 - r.base,
                mmio: false,
            });
            continue;
        }
        let ends_vm = [u64::from(DEBUG_EXIT_PORT), u64::from(REPORT_PORT), 0x600];
        if ends_vm.iter().any(|p| span.contains(p)) {
            continue;
        }
        out.push(Target {
            base: r.base,
            len: r.len,
            mmio: false,
        });
    }
    let ecam = kubevirt_vmm::pci::PCI_MMCONFIG_START;
    let read32 = |addr: u64| {
        let mut v = [0u8; 4];
        vm.buses().mmio.read(addr, &mut v);
        u32::from_le_bytes(v)
    };
    for slot in 0..32u64 {
        let function = ecam + (slot << 15);
        if read32(function) == 0xffff_ffff {
            continue;
        }
        out.push(Target {
            base: function,
            len: 0x1000,
            mmio: true,
        });
        let bar0 = read32(function + 0x10);
        if bar0 & 1 == 0 && bar0 & !0xf != 0 {
            let high = if bar0 & 0x6 == 0x4 {
                u64::from(read32(function + 0x14)) << 32
            } else {
                0
            };
            out.push(Target {
                base: high | u64::from(bar0 & !0xf),
                len: MSIX_TABLE_OFFSET,
                mmio: true,
            });
        }
    }
    out.push(Target {
        base: kubevirt_vmm::acpi::ged::GED_MMIO_ADDR,
        len: 16,
        mmio: true,
    });
    out
}

/// The device workers seen during one VM's run, and the first that spun.
#[derive(Default)]
struct Workers {
    /// tid -> (name, CPU seconds, when) at the previous sample.
    seen: std::collections::HashMap<String, (String, f64, Instant)>,
    spinning: Option<String>,
}

impl Workers {
    /// Samples every worker; one that used more than 80% of a CPU since its previous sample
    /// (at least 200 ms before) spins.
    fn sample(&mut self) {
        let now = Instant::now();
        for (tid, name, cpu) in worker_cpu() {
            if let Some((_, before, at)) = self.seen.get(&tid) {
                let wall = now.duration_since(*at).as_secs_f64();
                if wall < 0.2 {
                    continue;
                }
                if (cpu - before) / wall > 0.8 && self.spinning.is_none() {
                    self.spinning = Some(format!(
                        "{name} (tid {tid}) used {:.2} s of CPU in {wall:.2} s: it spins",
                        cpu - before
                    ));
                }
            }
            self.seen.insert(tid, (name, cpu, now));
        }
    }
}

/// `(tid, name, CPU seconds)` of each of this process's `virtio-*` threads.
fn worker_cpu() -> Vec<(String, String, f64)> {
    // SAFETY: sysconf has no memory arguments.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("stat")),
        ) else {
            continue;
        };
        if !comm.starts_with("virtio-") {
            continue;
        }
        // Fields after the parenthesised name: state is 3rd, utime 14th, stime 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (field(14), field(15)) {
            out.push((
                task.file_name().to_string_lossy().into_owned(),
                comm.trim().to_string(),
                (user + system) / ticks,
            ));
        }
    }
    out
}

#[test]
fn a_hostile_guest_cannot_crash_hang_or_wedge_the_vmm() {
    let asked = std::env::var("KUBEVIRT_HOSTILE_OPS").is_ok();
    let total = env_u64("KUBEVIRT_HOSTILE_OPS", 1_000_000);
    let first_seed = env_u64("KUBEVIRT_HOSTILE_SEED", 0x5eed_0001);
    // Fresh devices often: a VM's devices end broken or reset in ways a longer run on them
    // would not leave again.
    let per_vm = total.div_ceil(4).clamp(1, 50_000);
    let panics = Arc::new(AtomicU64::new(0));
    let hook_panics = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook_panics.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let dir = kubevirt_testsupport::tempdir("hostile");
    let started = Instant::now();
    let (mut done, mut vms, mut guest_ended, mut pauses) = (0u64, 0u64, 0u64, 0u64);
    let mut fw_cfg_answered = 0u64;
    // Devices found at the end with DRIVER_OK, with DEVICE_NEEDS_RESET.
    let mut statuses = [0u64; 2];
    let mut workers_seen = 0u64;
    let mut seed = first_seed;
    while done < total && (asked || started.elapsed() < TIME_BUDGET) {
        let beat = Arc::new(Heartbeat::default());
        let (vm, _net_peer, _console_peer) = build(&dir, &beat);
        // A failing check must not drop the VM: dropping joins its workers, and a stuck or
        // spinning one would turn the failure into a hang. Only a VM that passed is dropped.
        let vm = std::mem::ManuallyDrop::new(vm);
        let list = targets(&vm);
        assert!(list.len() >= 8, "the VM has its devices: {list:?}");
        assert!(
            list.iter()
                .any(|t| !t.mmio && t.base == u64::from(FW_CFG_SELECTOR_PORT)),
            "fw_cfg is among the targets: {list:?}"
        );
        let ops = per_vm.min(total - done);
        let bars: Vec<u64> = list
            .iter()
            .filter(|t| t.len == MSIX_TABLE_OFFSET)
            .map(|t| t.base)
            .collect();
        let params = hostile::params(seed, ops, &list, &bars, SCRATCH, MEMORY);
        use vm_memory::Bytes;
        vm.memory()
            .write_slice(&params, vm_memory::GuestAddress(hostile::PARAMS))
            .unwrap();
        vm.start().unwrap();
        let mut workers = Workers::default();
        let mut last = (0u64, Instant::now());
        let mut last_pause = Instant::now();
        let reason = loop {
            if let Some(reason) = vm.wait_timeout(Duration::from_millis(250)) {
                break reason;
            }
            // Workers end with the VM: sample them while it runs.
            workers.sample();
            let beats = beat.beats.load(Ordering::SeqCst);
            if beats != last.0 {
                last = (beats, Instant::now());
            }
            assert!(
                last.1.elapsed() < WATCHDOG,
                "seed {seed:#x}: no heartbeat for {WATCHDOG:?} after {} operations (state {:?}): the VMM is stuck",
                beat.last.load(Ordering::SeqCst),
                vm.state()
            );
            // Responsive while hammered: pause, see the guest stand still, resume (once a
            // second: each pause costs the guest its 20 ms).
            if last_pause.elapsed() >= PAUSE_EVERY && vm.pause().is_ok() {
                last_pause = Instant::now();
                pauses += 1;
                assert_eq!(vm.state(), VmState::Paused);
                let before = beat.beats.load(Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                assert_eq!(
                    beat.beats.load(Ordering::SeqCst),
                    before,
                    "paused guest ran"
                );
                vm.resume().unwrap();
                last.1 = Instant::now();
            }
        };
        let reached = beat.last.load(Ordering::SeqCst);
        // The guest reached fw_cfg: it read the signature through the ports and by DMA
        // before hammering anything.
        for (how, got) in [
            ("its data port", &beat.fw_cfg_port),
            ("DMA", &beat.fw_cfg_dma),
        ] {
            let got = got.load(Ordering::SeqCst);
            assert_eq!(
                got, QEMU,
                "seed {seed:#x}: fw_cfg's signature through {how} reads {got:#x}, not \"QEMU\""
            );
        }
        fw_cfg_answered += beat.fw_cfg_answered.load(Ordering::SeqCst);
        // Where the guest left the virtio devices (their BARs as it last placed them).
        for t in targets(&vm).iter().filter(|t| t.len == MSIX_TABLE_OFFSET) {
            let mut status = [0u8];
            vm.buses().mmio.read(t.base + 0x14, &mut status);
            statuses[0] += u64::from(status[0] & status::DRIVER_OK != 0);
            statuses[1] += u64::from(status[0] & status::DEVICE_NEEDS_RESET != 0);
        }
        match &reason {
            ExitReason::DebugExit { code: 0 } => {
                assert_eq!(
                    reached, ops,
                    "seed {seed:#x}: the last heartbeat counts every operation"
                );
                done += ops;
            }
            // The guest ended itself: a random DMA landed on its own code or page tables, or
            // a device it programmed reset it. Its business; the VMM survived.
            ExitReason::TripleFault { .. } | ExitReason::Reset | ExitReason::PowerOff => {
                guest_ended += 1;
                done += reached.max(1);
            }
            other => panic!("seed {seed:#x}: the VM ended with {other} after {reached} operations"),
        }
        assert_eq!(
            panics.load(Ordering::SeqCst),
            0,
            "seed {seed:#x}: a VMM thread panicked"
        );
        // A device worker that spins burns CPU without stopping the guest's heartbeat. Once the
        // VM has ended, a worker still busy is one that never looks at its stop event.
        std::thread::sleep(Duration::from_millis(300));
        workers.sample();
        workers_seen += workers.seen.len() as u64;
        if let Some(spin) = workers.spinning.take() {
            panic!("seed {seed:#x}: {spin}");
        }
        drop(std::mem::ManuallyDrop::into_inner(vm));
        vms += 1;
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "hostile guest: {done} operations over {vms} VMs (seeds from {first_seed:#x}) in {elapsed:.1?} ({:.0} operations/s), {guest_ended} ended by the guest itself, {pauses} pause/resume rounds; fw_cfg signature read through the ports and by DMA in every VM, {fw_cfg_answered} of about {} random fw_cfg DMA descriptors answered; devices left DRIVER_OK {}, DEVICE_NEEDS_RESET {}; {workers_seen} device workers checked for spinning",
        done as f64 / elapsed.as_secs_f64(),
        done / hostile::FW_CFG_EVERY,
        statuses[0],
        statuses[1]
    );
    if guest_ended < vms {
        assert!(
            fw_cfg_answered > 0,
            "no random fw_cfg DMA descriptor was answered"
        );
    }
}
