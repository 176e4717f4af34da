//! Runs [`virtio_blk_stream`] on kubevirt-vmm against a raw file, and the host's own
//! `pwrite`/`pread` of the same requests on the same file: the two sides every virtio-blk
//! throughput comparison (`benches/vmm_blk.rs`, `tests/blk_queue_depth.rs`) puts side by side.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::virtio_blk_stream::{
    Marks, STREAM_IO_LEN, STREAM_MEMORY_SIZE, exit_meaning, virtio_blk_stream,
};
use super::{REPORT_PORT, TestGuestError};
use crate::virtio::block::{BackendError, Block, RawFile};
use crate::{BusDevice, ConsoleConfig, ExitReason, Vm, VmConfig, VmError};

/// How long one stream may run before the guest is stopped.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Errors of one stream run.
#[derive(Debug, thiserror::Error)]
pub enum StreamRunError {
    /// The guest did not assemble.
    #[error(transparent)]
    Guest(#[from] TestGuestError),
    /// The disk image could not be opened.
    #[error("opening the disk image: {0}")]
    Backend(#[from] BackendError),
    /// The VM could not be built or started.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The guest ended other than by exiting 0.
    #[error("the stream guest ended with {reason:?} ({meaning})")]
    Failed {
        /// How it ended.
        reason: ExitReason,
        /// What its exit code means.
        meaning: &'static str,
    },
    /// The guest exited 0 but did not mark every phase.
    #[error("the stream guest did not mark phase {0}")]
    MissingMark(u32),
    /// The host side's file I/O failed.
    #[error("host I/O on the disk image: {0}")]
    Host(#[from] std::io::Error),
}

/// The times of one stream's two phases.
#[derive(Clone, Copy, Debug)]
pub struct StreamTimes {
    /// The writes and the final flush (fdatasync).
    pub write: Duration,
    /// The reads.
    pub read: Duration,
}

impl StreamTimes {
    /// (write, read) throughput in MiB/s for `mib` MiB per phase.
    pub fn mib_per_s(&self, mib: u32) -> (f64, f64) {
        let rate = |d: Duration| f64::from(mib) / d.as_secs_f64();
        (rate(self.write), rate(self.read))
    }
}

/// Timestamps each 4-byte phase mark on [`REPORT_PORT`].
#[derive(Default)]
struct PhaseMarks(Vec<(u32, Instant)>);

impl BusDevice for PhaseMarks {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if let Ok(v) = <[u8; 4]>::try_from(data) {
            self.0.push((u32::from_le_bytes(v), Instant::now()));
        }
    }
}

/// Streams `mib` x 1 MiB to and from the raw file at `path` from the in-guest driver with
/// `depth` requests in flight, on one vCPU; the phases are timed from the guest's marks, so
/// VM creation and device discovery are not.
pub fn run_guest(path: &Path, mib: u32, depth: u32) -> Result<StreamTimes, StreamRunError> {
    let guest = virtio_blk_stream(mib, depth, Marks::ReportPort)?;
    let marks = Arc::new(Mutex::new(PhaseMarks::default()));
    let config = VmConfig::new(1, STREAM_MEMORY_SIZE, guest.boot_source())
        .with_serial(ConsoleConfig::Sink)
        .with_debug_exit();
    let disk = Block::new(Box::new(RawFile::open(path, false)?), "stream");
    let vm = Vm::builder(config)
        .pio_device(REPORT_PORT, 4, marks.clone())
        .virtio_device(Box::new(disk))
        .build()?;
    vm.start()?;
    let reason = vm.wait_timeout(TIMEOUT).unwrap_or_else(|| vm.stop());
    if reason != (ExitReason::DebugExit { code: 0 }) {
        let meaning = match reason {
            ExitReason::DebugExit { code } => exit_meaning(code),
            _ => "it did not exit through the debug-exit port",
        };
        return Err(StreamRunError::Failed { reason, meaning });
    }
    let m = marks.lock().unwrap_or_else(|e| e.into_inner());
    let at = |v: u32| {
        m.0.iter()
            .find(|(x, _)| *x == v)
            .map(|(_, t)| *t)
            .ok_or(StreamRunError::MissingMark(v))
    };
    Ok(StreamTimes {
        write: at(2)? - at(1)?,
        read: at(3)? - at(2)?,
    })
}

/// The host peer: the same 1 MiB writes (then fdatasync) and reads with `pwrite`/`pread` on
/// the same file, from a buffer written before timing starts (as the guest's is).
pub fn run_host(path: &Path, mib: u32) -> Result<StreamTimes, StreamRunError> {
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let mut buf = vec![0x5au8; STREAM_IO_LEN as usize];
    let offset = |i: u32| u64::from(i) * u64::from(STREAM_IO_LEN);
    let start = Instant::now();
    for i in 0..mib {
        f.write_all_at(&buf, offset(i))?;
    }
    f.sync_data()?;
    let write = start.elapsed();
    let start = Instant::now();
    for i in 0..mib {
        f.read_exact_at(&mut buf, offset(i))?;
    }
    Ok(StreamTimes {
        write,
        read: start.elapsed(),
    })
}

/// Creates a sparse raw image of `mib` MiB at `path`, the size both runs need.
pub fn create_image(path: &Path, mib: u32) -> std::io::Result<()> {
    std::fs::File::create(path)?.set_len(u64::from(mib) * u64::from(STREAM_IO_LEN))
}

/// The median of `v` (the upper one for an even count); 0 for an empty `v`.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
