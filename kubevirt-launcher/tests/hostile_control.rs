//! The hostile guest against a real `kubevirt-launcher run` process: booted as a PVH kernel
//! from an OCI layout (`testguest::hostile_standalone`, which finds its targets itself — the
//! standard port devices but COM1, PCI configuration through ECAM, and the BAR 0 registers of
//! every function the launcher gave the VM: virtio-blk for an emptyDisk, virtio-rng), it
//! hammers them with random values and garbage rings while the test drives the launcher's
//! control socket with the typed client. Every status, pause, unpause and the final stop must
//! be answered within [`ANSWER`]; the guest's heartbeat (a `.` on the serial console every 256
//! operations) stands still while paused and goes on after the unpause; the launcher ends the
//! VMI without a panic.
//!
//! `KUBEVIRT_HOSTILE_ROUNDS` sets the pause/unpause rounds (default 4).

mod common;

use common::{ImageBlobs, Launcher, run_command, tempdir};
use kubevirt_launcher_protocol::{Client, Phase, Request};
use kubevirt_vmm::testguest::hostile::REPORT_EVERY;
use kubevirt_vmm::testguest::{elf, hostile_standalone};
use std::time::{Duration, Instant};

/// The guest's RAM (its scratch area is the upper half).
const MEMORY: u64 = 32 << 20;
/// The longest any control request may take.
const ANSWER: Duration = Duration::from_secs(5);

/// Heartbeats so far.
fn beats(launcher: &Launcher) -> usize {
    launcher.console().matches('.').count()
}

/// Runs `request`, failing the test unless it succeeds within [`ANSWER`]; returns its answer
/// and how long it took.
fn timed<T, E: std::fmt::Debug>(
    what: &str,
    request: impl FnOnce() -> Result<T, E>,
) -> (T, Duration) {
    let t = Instant::now();
    let answer = request().unwrap_or_else(|e| panic!("{what}: {e:?}"));
    let took = t.elapsed();
    assert!(
        took < ANSWER,
        "{what} took {took:?} while the guest hammers"
    );
    (answer, took)
}

/// Waits until the heartbeat count passes `than`, failing after `limit`.
fn beats_past(launcher: &Launcher, than: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = beats(launcher);
        if n > than {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat past {than} within {limit:?}:\n{}",
            launcher.messages()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_control_socket_answers_while_a_hostile_guest_hammers_the_launchers_vm() {
    let rounds: u32 = std::env::var("KUBEVIRT_HOSTILE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = tempdir("hostile-control");
    let guest = hostile_standalone::hostile_standalone(0x5eed_c0de, MEMORY).expect("guest");
    let elf = elf::pvh_elf(&guest).expect("pvh elf");
    ImageBlobs::with(&[("boot/guest.elf", &elf)]).write_layout(&dir.join("image"), "hostile");
    let vmi = format!(
        r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {{name: hostile, namespace: default}}
spec:
  domain:
    memory: {{guest: {}Mi}}
    firmware:
      kernelBoot: {{container: {{image: "oci:{}:hostile", kernelPath: /boot/guest.elf}}}}
    devices:
      autoattachPodInterface: false
      rng: {{}}
      disks:
      - {{name: scratch, disk: {{bus: virtio}}, serial: HOSTILE}}
  volumes:
  - {{name: scratch, emptyDisk: {{capacity: 4Mi}}}}
"##,
        MEMORY >> 20,
        dir.join("image").display()
    );
    let mut launcher = Launcher::spawn(run_command(&dir, &vmi, &[]));
    let started = Instant::now();
    beats_past(&launcher, 10, Duration::from_secs(60));
    // What the guest found to hammer (a letter each): the four port ranges, the GED, and on
    // PCI the host bridge, the PIIX4 PM function, virtio-blk and virtio-rng (each with its
    // configuration space; the virtio ones with BAR 0, and set up driver-like now and then).
    let console = launcher.console();
    let found = console.lines().next().unwrap_or_default();
    let count = |c: char| found.matches(c).count();
    assert_eq!(
        (count('p'), count('g'), count('v')),
        (4, 1, 2),
        "targets found: {found:?}"
    );
    assert!(
        count('c') >= 4 && count('b') >= 2,
        "targets found: {found:?}"
    );
    let client = Client::new(dir.join("run/control.sock")).with_timeout(ANSWER);
    let mut slowest = Duration::ZERO;
    for round in 0..rounds {
        let (status, took) = timed("status", || client.status());
        slowest = slowest.max(took);
        assert_eq!(
            (status.phase, status.paused),
            (Phase::Running, false),
            "round {round}"
        );
        let (_, took) = timed("pause", || client.act(&Request::Pause));
        slowest = slowest.max(took);
        let (status, took) = timed("status (paused)", || client.status());
        slowest = slowest.max(took);
        assert!(status.paused, "round {round}: the launcher says paused");
        // Output the guest made just before the pause may still be on its way to the console.
        std::thread::sleep(Duration::from_millis(300));
        let frozen = beats(&launcher);
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(
            beats(&launcher),
            frozen,
            "round {round}: a paused guest made progress"
        );
        let (_, took) = timed("unpause", || client.act(&Request::Unpause));
        slowest = slowest.max(took);
        beats_past(&launcher, frozen, Duration::from_secs(10));
        // Let it hammer a while before the next round.
        std::thread::sleep(Duration::from_millis(1500));
    }
    let total = beats(&launcher);
    let hammered = started.elapsed();
    let (_, took) = timed("stop", || client.stop());
    slowest = slowest.max(took);
    let status = launcher
        .exit_within(Duration::from_secs(30))
        .expect("the launcher exits after stop");
    let messages = launcher.messages();
    assert!(status.success(), "{status}:\n{messages}");
    assert!(!messages.contains("panicked"), "{messages}");
    assert!(
        messages.contains("hostile: the VMI ended phase=Succeeded"),
        "{messages}"
    );
    eprintln!(
        "hostile guest under kubevirt-launcher: targets {found:?}, {rounds} pause/unpause rounds, about {} operations in {hammered:.1?}, slowest control answer {slowest:?}",
        total as u64 * REPORT_EVERY
    );
}
