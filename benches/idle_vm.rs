//! Idle guests: what the demo guest costs the host while it waits at its prompt, halting
//! (entered at CPL 0: IDT, LAPIC timer, COM1 / power button / virtio-net interrupts, `sti; hlt`
//! in its idle loop) against the same guest busy-polling its devices (entered at CPL 3, where it
//! cannot take interrupts), in the same run. Reported: the share of one core used by the vCPU
//! thread and by the whole process over an idle window, and their ratio (goal: halting < 1% of a
//! core). Criterion times what halting must not slow down: the wake-up for a typed key (the
//! serial interrupt against a poll) and a disk command (`disktest`: write, flush, read back).
//! Last, the same idle measurement for a whole `kubevirt-launcher run` of the shipped demo VMI
//! (`examples/vmi-demo.yaml`: disk, cloud-init, virtio-rng), every launcher thread counted.
//!
//! Run: `cargo bench --bench idle_vm`

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use kubevirt_testsupport::{Profile, TestDir, launcher_binary, tempdir};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::{ConsoleBuffer, ConsoleConfig, ConsoleStats, Privilege, Vm};

const MEMORY: u64 = 16 << 20;
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// Wait this long after the prompt (or the last command) before measuring.
const SETTLE: Duration = Duration::from_millis(500);
const PROMPT: &str = "demo# ";

/// How the guest waits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Wait {
    /// Entered at CPL 0: takes interrupts and halts.
    Halting,
    /// Entered at CPL 3: polls its devices in a loop.
    Polling,
}

/// CPU time so far of the threads under `/proc/<pid>/task` (named `only`, if given), from
/// `schedstat` (nanoseconds on a CPU).
fn cpu_time(pid: &str, only: Option<&str>) -> Duration {
    let mut total = 0u64;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/<pid>/task");
    for task in tasks.flatten() {
        let dir = task.path();
        if let Some(name) = only
            && std::fs::read_to_string(dir.join("comm")).map_or(true, |c| c.trim() != name)
        {
            continue;
        }
        // A thread that ended meanwhile has no files any more.
        if let Ok(text) = std::fs::read_to_string(dir.join("schedstat")) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(total)
}

/// Shares of one core used over `window` by the threads named `only` and by all of them.
fn shares(pid: &str, only: &str, window: Duration) -> (f64, f64) {
    let (one0, all0, t0) = (
        cpu_time(pid, Some(only)),
        cpu_time(pid, None),
        Instant::now(),
    );
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    (
        (cpu_time(pid, Some(only)) - one0).as_secs_f64() / secs,
        (cpu_time(pid, None) - all0).as_secs_f64() / secs,
    )
}

struct Guest {
    vm: Vm,
    console: ConsoleBuffer,
    stats: Arc<ConsoleStats>,
    _dir: TestDir,
}

impl Guest {
    fn boot(wait: Wait) -> Guest {
        let dir = tempdir("idle-bench");
        let disk = dir.join("scratch.img");
        std::fs::write(&disk, vec![0u8; 1 << 20]).expect("scratch disk");
        let privilege = match wait {
            Wait::Polling => Privilege::User,
            Wait::Halting => Privilege::Kernel,
        };
        let console = ConsoleBuffer::new();
        let mut config =
            kubevirt_demo_guest::vm_config(privilege, ConsoleConfig::Buffer(console.clone()));
        config.memory_size = MEMORY;
        let backend = RawFile::open(&disk, false).expect("open the scratch disk");
        let vm = Vm::builder(config)
            .virtio_device(Box::new(Block::new(Box::new(backend), "IDLE")))
            .build()
            .expect("build the VM");
        vm.start().expect("start");
        let stats = vm.console_stats().expect("a serial console");
        let g = Guest {
            vm,
            console,
            stats,
            _dir: dir,
        };
        let out = g.expect(0, PROMPT);
        let irq = out.contains("halts while idle");
        assert_eq!(irq, wait == Wait::Halting, "{wait:?} guest:\n{out}");
        g
    }

    /// Waits until the console shows `text` after byte `from`; returns the console.
    fn expect(&self, from: usize, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.console.text();
            if out.get(from..).is_some_and(|t| t.contains(text)) {
                return out;
            }
            assert!(
                Instant::now() < deadline && self.vm.wait_timeout(Duration::ZERO).is_none(),
                "the guest never printed {text:?}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Spins until the guest has written `n` bytes in all.
    fn wait_bytes(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.stats.bytes_out() < n {
            assert!(Instant::now() < deadline, "the guest stopped answering");
            std::hint::spin_loop();
        }
    }

    /// Time for `iters` keys echoed: each key typed, then its echo awaited (the erase that
    /// follows, untimed, keeps the line empty).
    fn echo(&self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let before = self.stats.bytes_out();
            let t = Instant::now();
            self.vm.serial_input(b"x");
            self.wait_bytes(before + 1);
            total += t.elapsed();
            // DEL: the guest answers "\x08 \x08".
            self.vm.serial_input(b"\x7f");
            self.wait_bytes(before + 4);
        }
        total
    }

    /// The console bytes one `disktest` prints, prompt included.
    fn disktest_output_len(&self) -> u64 {
        let from = self.console.text().len();
        let before = self.stats.bytes_out();
        self.vm.serial_input(b"disktest\r");
        let out = self.expect(from, PROMPT);
        assert!(
            out[from..].contains("read it back: ok"),
            "disktest: {}",
            &out[from..]
        );
        self.stats.bytes_out() - before
    }

    /// Time for `iters` runs of `disktest`, each printing `len` bytes.
    fn disktest(&self, iters: u64, len: u64) -> Duration {
        let t = Instant::now();
        for _ in 0..iters {
            let before = self.stats.bytes_out();
            self.vm.serial_input(b"disktest\r");
            self.wait_bytes(before + len);
        }
        t.elapsed()
    }

    /// Shares of one core (vCPU thread, whole process) while the guest sits at its prompt.
    fn idle(&self) -> (f64, f64) {
        std::thread::sleep(SETTLE);
        let r = shares("self", "vcpu0", IDLE_WINDOW);
        assert_eq!(
            self.vm.wait_timeout(Duration::ZERO),
            None,
            "the guest ended"
        );
        r
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("demo_guest");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for wait in [Wait::Halting, Wait::Polling] {
        let guest = Guest::boot(wait);
        let name = format!("{wait:?}").to_lowercase();
        g.bench_function(format!("key_echo_{name}"), |b| {
            b.iter_custom(|n| guest.echo(n))
        });
        let len = guest.disktest_output_len();
        g.bench_function(format!("disktest_{name}"), |b| {
            b.iter_custom(|n| guest.disktest(n, len))
        });
        guest.vm.stop();
    }
    g.finish();
}

fn percent(share: f64) -> String {
    format!("{:.3}%", share * 100.0)
}

/// Idle cost of the halting and the polling guest, one after the other in this process.
fn idle_ratio() {
    let mut results = Vec::new();
    for wait in [Wait::Halting, Wait::Polling] {
        let guest = Guest::boot(wait);
        let r = guest.idle();
        guest.vm.stop();
        results.push(r);
    }
    let [(hv, hp), (pv, pp)] = results[..] else {
        unreachable!("two guests")
    };
    println!(
        "idle demo guest over {:?}: halting: vCPU thread {}, process {} of one core; \
         busy-polling: vCPU thread {}, process {}; halting/polling (process) = {:.5} (goal: halting < 1%)",
        IDLE_WINDOW,
        percent(hv),
        percent(hp),
        percent(pv),
        percent(pp),
        hp / pp
    );
}

/// Collects a child's output.
fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let to = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            to.lock()
                .expect("output")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// The shipped demo VMI, its image written under `dir`.
fn demo_vmi(dir: &Path) -> PathBuf {
    let image = dir.join("image");
    kubevirt_demo_guest::write_image(&image).expect("write the demo image");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/vmi-demo.yaml"),
    )
    .expect("examples/vmi-demo.yaml");
    let vmi = shipped.replace(
        "oci:target/demo-image:demo",
        &format!("oci:{}:demo", image.display()),
    );
    let file = dir.join("vmi.yaml");
    std::fs::write(&file, vmi).expect("write the VMI");
    file
}

/// Idle cost of a whole launcher process running the shipped demo VMI.
fn idle_launcher() {
    let dir = tempdir("idle-bench-launcher");
    let vmi = demo_vmi(&dir);
    let mut child: Child = Command::new(launcher_binary(Profile::Release))
        .args(["run", vmi.to_str().expect("a UTF-8 path")])
        .args(["--run-dir", dir.join("run").to_str().expect("UTF-8")])
        .args(["--cache-dir", dir.join("cache").to_str().expect("UTF-8")])
        .args([
            "--volumes-dir",
            dir.join("volumes").to_str().expect("UTF-8"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubevirt-launcher");
    let stdout = collect(child.stdout.take().expect("stdout"));
    let _stderr = collect(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stdout.lock().expect("output").contains(PROMPT) {
        assert!(
            Instant::now() < deadline,
            "the launcher's guest never prompted"
        );
        assert!(
            child.try_wait().expect("launcher status").is_none(),
            "the launcher ended"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(SETTLE);
    let pid = child.id().to_string();
    let (vcpu, all) = shares(&pid, "vcpu0", IDLE_WINDOW);
    assert!(child.try_wait().expect("launcher status").is_none());
    println!(
        "idle kubevirt-launcher running examples/vmi-demo.yaml over {IDLE_WINDOW:?}: vCPU thread {}, \
         whole launcher process {} of one core",
        percent(vcpu),
        percent(all)
    );
    // SIGTERM presses the power button: the guest powers off and the launcher exits.
    // SAFETY: kill(2) on the pid of the child this function started and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

criterion_group!(benches, bench);

fn main() {
    benches();
    idle_ratio();
    idle_launcher();
    Criterion::default().configure_from_args().final_summary();
}
