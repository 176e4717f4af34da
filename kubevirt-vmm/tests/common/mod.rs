//! Helpers shared by the integration tests: a recording bus device and a bounded wait.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kubevirt_vmm::{BusDevice, ExitReason, Vm};

/// Longest any test guest may take; far above what they need, short enough to fail a hang.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One access seen by a [`Recorder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A read at (base, offset, size).
    Read(u64, u64, usize),
    /// A write at (base, offset, bytes).
    Write(u64, u64, Vec<u8>),
}

/// Records every access; reads return `read_value` (little-endian, truncated to the size).
#[derive(Debug, Default)]
pub struct Recorder {
    pub seen: Vec<Seen>,
    pub read_value: u64,
}

impl Recorder {
    pub fn shared(read_value: u64) -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder {
            seen: Vec::new(),
            read_value,
        }))
    }
}

impl BusDevice for Recorder {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        self.seen.push(Seen::Read(base, offset, data.len()));
        let bytes = self.read_value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        self.seen.push(Seen::Write(base, offset, data.to_vec()));
    }
}

/// Runs the ignored test `name` of this test binary in a child process with `env` set, and
/// returns its stdout once it passed (failing the test with its output if it did not). A
/// snapshot restored in the child proves nothing of the parent's process is needed.
pub fn run_child_test(name: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// Waits for the VM to end, failing the test (after stopping the VM) if it does not in time.
pub fn wait(vm: &Vm) -> ExitReason {
    match vm.wait_timeout(GUEST_TIMEOUT) {
        Some(reason) => reason,
        None => {
            let state = vm.state();
            vm.stop();
            panic!("guest did not finish within {GUEST_TIMEOUT:?} (state {state:?})");
        }
    }
}

/// The 4-byte marks a test guest wrote to a [`Recorder`] (e.g. the phase numbers it reports
/// on `REPORT_PORT`), in order.
pub fn marks_of(recorder: &Mutex<Recorder>) -> Vec<u32> {
    recorder
        .lock()
        .unwrap()
        .seen
        .iter()
        .filter_map(|s| match s {
            Seen::Write(_, _, bytes) => <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(u32::from_le_bytes),
            Seen::Read(..) => None,
        })
        .collect()
}

/// The virtio-blk stream guest (`testguest::virtio_blk_stream`) exited 0 with no failed request.
pub fn assert_stream_finished(vm: &Vm, reason: ExitReason) {
    use kubevirt_vmm::testguest::virtio_blk_stream::{STREAM_ERRORS, exit_meaning};
    use vm_memory::{Bytes, GuestAddress};
    let errors: u32 = vm.memory().read_obj(GuestAddress(STREAM_ERRORS)).unwrap();
    match reason {
        ExitReason::DebugExit { code: 0 } => {}
        ExitReason::DebugExit { code } => {
            panic!("the stream guest exited {code}: {}", exit_meaning(code))
        }
        other => panic!("the stream guest ended with {other:?}"),
    }
    assert_eq!(errors, 0, "requests completed with a non-zero status");
}

/// Migrates `source` into `target` over a socket pair (the target receives on a thread): what
/// each side's migration returned.
pub fn migrate(
    source: &Vm,
    target: kubevirt_vmm::VmBuilder,
    options: &kubevirt_vmm::migration::MigrationOptions,
    control: &kubevirt_vmm::migration::MigrationControl,
) -> (
    Result<kubevirt_vmm::migration::MigrationProgress, kubevirt_vmm::migration::MigrationError>,
    Result<Vm, kubevirt_vmm::migration::MigrationError>,
) {
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().expect("a socket pair");
    for s in [&a, &b] {
        s.set_read_timeout(Some(GUEST_TIMEOUT)).expect("a timeout");
    }
    let receiver = std::thread::spawn(move || target.migrate_from(&mut b));
    let sent = source.migrate_to(&mut a, options, control);
    drop(a);
    (sent, receiver.join().expect("the receiving thread"))
}

/// A net backend over a datagram socket pair whose other end the test keeps. A frame the peer
/// has no room for (a non-blocking socket) is refused, and the device counts it dropped.
pub struct Datagram(pub std::os::unix::net::UnixDatagram);

impl kubevirt_vmm::virtio::net::NetBackend for Datagram {
    fn rx_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.0.send(frame).map(drop)
    }
}
