//! The demo guest waits like a kernel: once at its prompt it halts until an interrupt, so its
//! vCPU thread sleeps. Booted both ways it boots in practice: direct boot at CPL 0 (the
//! test-guest toolkit) and the PVH ELF the launcher's container image carries. Each test
//! measures the CPU time of the vCPU thread and of every thread of this process (the vCPU and
//! the VMM's device threads) over a few idle seconds, then types commands and expects the
//! answers — the serial receive interrupt wakes the guest — and measures again. The tests run
//! one at a time (a lock), so one guest's boot is not counted in the other's idle time. The same
//! image entered at CPL 3 falls back to polling, and the same measurement sees its busy vCPU.

use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{
    BootSource, ConsoleBuffer, ConsoleConfig, KernelImage, LinuxBoot, Privilege, Vm,
};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MEMORY: u64 = 16 << 20;
/// The goal: an idle guest costs under 1% of a core, its VMM's threads included (measured:
/// ~0.01%; a busy-polling guest costs 100%).
const MAX_IDLE_SHARE: f64 = 0.01;
const IDLE_WINDOW: Duration = Duration::from_secs(3);
static ONE_GUEST_AT_A_TIME: Mutex<()> = Mutex::new(());

/// CPU time used so far by the threads of this process whose name is `only` (every thread:
/// `None`), from `schedstat` (nanoseconds on a CPU).
fn cpu_time(only: Option<&str>) -> Duration {
    let (mut total, mut threads) = (0u64, 0);
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("a task entry").path();
        // A thread that ended meanwhile has no files any more: it costs nothing now.
        if let Some(name) = only
            && std::fs::read_to_string(dir.join("comm")).map_or(true, |c| c.trim() != name)
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        threads += 1;
    }
    assert!(threads > 0, "no thread named {only:?}");
    Duration::from_nanos(total)
}

/// The share of a core the vCPU thread and the whole process use over `window`.
fn idle_shares(window: Duration) -> (f64, f64) {
    let (vcpu0, all0, t0) = (cpu_time(Some("vcpu0")), cpu_time(None), Instant::now());
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    (
        (cpu_time(Some("vcpu0")) - vcpu0).as_secs_f64() / secs,
        (cpu_time(None) - all0).as_secs_f64() / secs,
    )
}

struct Guest {
    vm: Vm,
    console: ConsoleBuffer,
}

impl Guest {
    /// Boots the demo guest (as the PVH ELF or directly, at `privilege`).
    fn boot(pvh: bool, privilege: Privilege) -> Guest {
        let dir = kubevirt_testsupport::tempdir(if pvh { "idle-pvh" } else { "idle-direct" });
        let disk = dir.join("scratch.img");
        std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
        let console = ConsoleBuffer::new();
        let mut config =
            kubevirt_demo_guest::vm_config(privilege, ConsoleConfig::Buffer(console.clone()));
        config.memory_size = MEMORY;
        if pvh {
            config.boot = BootSource::Linux(LinuxBoot {
                kernel: KernelImage::Bytes(kubevirt_demo_guest::pvh_elf().unwrap()),
                initrd: None,
                cmdline: "console=ttyS0".into(),
            });
        }
        let backend = RawFile::open(&disk, false).unwrap();
        let vm = Vm::builder(config)
            .virtio_device(Box::new(Block::new(Box::new(backend), "IDLE")))
            .build()
            .unwrap();
        vm.start().unwrap();
        Guest { vm, console }
    }

    /// Waits until the console shows `text` after byte `from`; returns everything so far.
    fn expect(&self, from: usize, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.console.text();
            if out.get(from..).is_some_and(|tail| tail.contains(text)) {
                return out;
            }
            assert!(
                Instant::now() < deadline && self.vm.wait_timeout(Duration::ZERO).is_none(),
                "the guest never printed {text:?}; console:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn type_line(&self, line: &str) {
        self.vm.serial_input(format!("{line}\r").as_bytes());
    }

    /// Measures the idle guest and checks it is still there (a guest that ended costs nothing).
    fn measure_idle(&self, what: &str, window: Duration) {
        // Let the last command's work settle first.
        std::thread::sleep(Duration::from_millis(300));
        let (vcpu, all) = idle_shares(window);
        eprintln!(
            "{what}: vCPU thread {:.3}%, whole process {:.3}% of one core",
            vcpu * 100.0,
            all * 100.0
        );
        assert_eq!(
            self.vm.wait_timeout(Duration::ZERO),
            None,
            "the guest ended while idle; console:\n{}",
            self.console.text()
        );
        assert!(
            all < MAX_IDLE_SHARE,
            "{what}: the idle guest's process used {:.2}% of a core (bound {:.0}%)",
            all * 100.0,
            MAX_IDLE_SHARE * 100.0
        );
    }
}

fn idles_and_answers(pvh: bool) {
    let _one = ONE_GUEST_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let how = if pvh { "PVH" } else { "direct boot" };
    let guest = Guest::boot(pvh, Privilege::Kernel);
    let out = guest.expect(0, "demo# ");
    assert!(out.contains(kubevirt_demo_guest::BANNER), "{out}");
    assert!(
        out.contains("halts while idle"),
        "the guest takes no interrupts:\n{out}"
    );
    guest.measure_idle(&format!("idle at the prompt ({how})"), IDLE_WINDOW);

    // Typed input wakes it: the receive interrupt, not a poll.
    let from = guest.console.text().len();
    let typed = Instant::now();
    guest.type_line("uname");
    guest.expect(from, "kubevirt-rs-demo demo 1.0");
    eprintln!("answered in {:?}", typed.elapsed());
    let from = guest.console.text().len();
    guest.type_line("disktest");
    guest.expect(from, "vda: wrote sector 1, flushed, read it back: ok");
    // And goes back to sleep after the commands.
    guest.expect(from, "demo# ");
    guest.measure_idle(
        &format!("idle after commands ({how})"),
        Duration::from_secs(1),
    );
    guest.vm.stop();
}

#[test]
fn direct_boot_guest_halts_while_idle_and_answers_typed_commands() {
    idles_and_answers(false);
}

#[test]
fn pvh_guest_halts_while_idle_and_answers_typed_commands() {
    idles_and_answers(true);
}

/// Entered at CPL 3 (a loader that does not start it at CPL 0), the guest cannot install an IDT:
/// it says so, polls, and still answers. Its vCPU is busy, which the measurement above sees.
#[test]
fn a_guest_entered_at_cpl3_polls_and_still_answers() {
    let _one = ONE_GUEST_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let guest = Guest::boot(false, Privilege::User);
    let out = guest.expect(0, "demo# ");
    assert!(
        out.contains("irq: none (entered at CPL 3): polling"),
        "{out}"
    );
    let from = out.len();
    guest.type_line("uname");
    guest.expect(from, "kubevirt-rs-demo demo 1.0");
    std::thread::sleep(Duration::from_millis(300));
    let (vcpu, _) = idle_shares(Duration::from_secs(1));
    eprintln!(
        "polling guest at its prompt: vCPU thread {:.1}%",
        vcpu * 100.0
    );
    assert!(
        vcpu > 0.10,
        "a polling vCPU shows as busy, yet it used {:.2}% of a core",
        vcpu * 100.0
    );
    guest.vm.stop();
}
