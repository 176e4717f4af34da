//! The console and start paths, end to end on `kubevirt-local up` with the demo guest:
//! - a keystroke's echo round trip typed through `virtctl console` (a pty → virtctl → TLS
//!   websocket → API server → node agent endpoint → launcher console socket → guest, and back)
//!   against typed straight on the launcher's console socket;
//! - `virtctl start` of a stopped VM until its VMI is Running.
//!
//! `cargo bench -p kubevirt-controller --bench console [-- ROUNDS]` (default 200 keystrokes, 5
//! starts). Root and /dev/kvm, like the tests.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubevirt_testsupport::{Profile, demo_image, eventually, find_file, kubectl, tempdir};
use support::Plane;

const VIRTCTL: &str = env!("CARGO_BIN_EXE_virtctl");

/// Reads from `r` until `needle` has been seen in what was read since the call began.
fn read_until(r: &mut impl Read, needle: &[u8]) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = r.read(&mut buf).expect("console output");
        assert!(n > 0, "the console closed");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Types `x` and waits for its echo, then erases it (and waits for the erase): `rounds` times.
fn round_trips(w: &mut impl Write, r: &mut impl Read, rounds: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        w.write_all(b"x").unwrap();
        read_until(r, b"x");
        out.push(t.elapsed());
        w.write_all(&[0x7f]).unwrap();
        read_until(r, b"\x08 \x08");
    }
    out
}

fn summary(name: &str, mut d: Vec<Duration>) {
    d.sort();
    let pct = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize];
    let mean = d.iter().sum::<Duration>() / d.len() as u32;
    println!(
        "{name:<44} n={:<4} p50 {:>9.3?}  p95 {:>9.3?}  mean {:>9.3?}  max {:>9.3?}",
        d.len(),
        pct(0.5),
        pct(0.95),
        mean,
        d[d.len() - 1]
    );
}

struct Attached {
    child: Child,
    leader: File,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attach(kubeconfig: &Path) -> Attached {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let leader: OwnedFd = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&leader).unwrap();
    unlockpt(&leader).unwrap();
    let name = ptsname(&leader, Vec::new()).unwrap();
    let sub = File::options()
        .read(true)
        .write(true)
        .open(PathBuf::from(name.to_str().unwrap()))
        .unwrap();
    let child = Command::new(VIRTCTL)
        .env("KUBECONFIG", kubeconfig)
        .args(["console", "demo"])
        .stdin(sub.try_clone().unwrap())
        .stdout(sub.try_clone().unwrap())
        .stderr(sub)
        .spawn()
        .unwrap();
    Attached {
        child,
        leader: File::from(leader),
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let profile = if cfg!(debug_assertions) {
        Profile::Debug
    } else {
        Profile::Release
    };
    let dir = tempdir("bench-console");
    let image = demo_image(&dir);
    let plane = Plane::start(&dir, profile);
    let k = plane.kubeconfig().to_path_buf();
    let applied = kubectl(&k, &["apply", "-f", "-"], Some(&support::demo_vm(&image)));
    assert!(applied.status.success(), "{applied:?}");
    let run_root = dir.join("data").join("vmis");
    let socket = eventually("the console socket", || {
        find_file(&run_root, "console.sock")
    });
    let mut direct = eventually("the console answering", || {
        UnixStream::connect(&socket).ok()
    });
    read_until(&mut direct, b"demo-vm# ");
    // Warm up, then measure.
    round_trips(&mut direct.try_clone().unwrap(), &mut direct, 10);
    let straight = round_trips(&mut direct.try_clone().unwrap(), &mut direct, rounds);
    drop(direct);

    let mut a = attach(&k);
    let mut reader = a.leader.try_clone().unwrap();
    read_until(&mut reader, b"The escape sequence is ^]");
    a.leader.write_all(b"\r").unwrap();
    read_until(&mut reader, b"demo-vm# ");
    round_trips(&mut a.leader, &mut reader, 10);
    let through = round_trips(&mut a.leader, &mut reader, rounds);
    drop(a);

    // virtctl start → VMI Running.
    let vm_status = |k: &Path| {
        let o = kubectl(
            k,
            &["get", "vm/demo", "-o", "jsonpath={.status.printableStatus}"],
            None,
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut starts = Vec::new();
    for _ in 0..5 {
        let o = Command::new(VIRTCTL)
            .env("KUBECONFIG", &k)
            .args(["stop", "demo"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        eventually("the VM Stopped", || {
            (vm_status(&k) == "Stopped").then_some(())
        });
        let t = Instant::now();
        let o = Command::new(VIRTCTL)
            .env("KUBECONFIG", &k)
            .args(["start", "demo"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        // Polled through the API (kubectl costs ~0.1 s a call, so the VMI's own phase
        // transition time says when it got Running).
        let running_at = eventually("the VMI Running", || {
            let o = kubectl(
                &k,
                &[
                    "get",
                    "vmi/demo",
                    "-o",
                    "jsonpath={.status.phase} {.status.phaseTransitionTimestamps[?(@.phase=='Running')].phaseTransitionTimestamp}",
                ],
                None,
            );
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.starts_with("Running ").then_some(Instant::now())
        });
        starts.push(running_at - t);
    }

    println!("kubevirt-controller console bench ({profile:?} build, {rounds} keystrokes)");
    summary("keystroke echo, launcher console socket", straight);
    summary("keystroke echo, through virtctl console", through);
    summary("virtctl start -> VMI Running (polled)", starts);
    drop(plane);
}
