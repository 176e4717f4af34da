//! Memory-state snapshots: a paused VM saved to a directory, restored in another process.
//!
//! [`crate::Vm::snapshot`] writes two files into a directory (three for a firmware-booted VM):
//! * [`STATE_FILE`]: the versioned, checksummed state (`format.rs` describes the envelope):
//!   every vCPU's registers, MSRs, FPU/XSAVE, LAPIC and pending events; the irqchip (both
//!   PICs, the IOAPIC), the PIT and the KVM clock; the RAM layout; and every bus device with its
//!   name, range and state;
//! * [`MEMORY_FILE`]: guest RAM, regions back to back, sparse (zero pages are holes), and a
//!   trailer with the snapshot's id, which the state file names too;
//! * [`FIRMWARE_FILE`] (firmware-booted VMs): the firmware image's size and CRC-32 and OVMF's
//!   variable store, which the guest writes outside RAM; restored into the new VM's store (a
//!   fresh copy of the empty one is enough), refused for another firmware image.
//!
//! [`crate::Vm::restore`] (or [`crate::VmBuilder::restore`], to add the embedding program's
//! devices again) builds a VM from the same configuration, maps the memory file
//! `MAP_PRIVATE` (pages fault in from the file as the guest touches them, as Firecracker does),
//! writes the saved state back and leaves the VM [`crate::VmState::Created`]:
//! [`crate::Vm::start`] resumes the guest where it was, with no second boot. Everything is
//! read and checked before the VM is created: a snapshot of another format version, a
//! corrupt or truncated state file, a memory file of the wrong size, a different vCPU count,
//! RAM size or device list is refused with an error saying which, and nothing runs.
//!
//! PCI functions are saved with the root complex (on the `pci-config-io` device): each
//! function's configuration space (BAR addresses included), and for virtio-pci the common
//! configuration, ISR, MSI-X table and pending bits, and — for a started device — each queue's
//! ring addresses and positions. To cut a consistent state the started devices pause their
//! workers (a block device also flushes its disk) until the files are written, then resume;
//! the restored VM re-installs its MSI routes and notify ioeventfds and starts the devices at
//! the saved queue positions. Host-side input a device held outside guest memory (a received
//! frame waiting for a buffer, console input not yet delivered) is not carried over.
//! fw_cfg saves its selector, offset and DMA address, and a checksum of its items (they come
//! from the configuration: a restore with other ones is refused).

pub(crate) mod codec;
mod devices;
mod format;
mod machine;
mod memory;
mod state;
mod vcpu;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use codec::CodecError;
pub use devices::DeviceSnapshotError;
pub use format::{FORMAT_VERSION, FormatError};
pub use machine::MachineStateError;
pub(crate) use machine::settable_clock;
pub use memory::MemoryFileError;
pub use vcpu::VcpuStateError;

pub(crate) use devices::{restore_devices, resume_devices, save_devices};
pub(crate) use machine::MachineState;
pub(crate) use memory::{MemoryLayout, map_memory_file, write_memory_file};
pub(crate) use state::SnapshotState;
pub(crate) use vcpu::VcpuState;

/// The state file's name in a snapshot directory.
pub const STATE_FILE: &str = "vmstate";
/// The memory file's name in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
/// A firmware-booted VM's firmware state (`boot::firmware::FirmwareState`: the image's size
/// and CRC-32, OVMF's variable store), sealed in the state file's envelope.
pub const FIRMWARE_FILE: &str = "firmware";

/// Errors taking or restoring a snapshot. Each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Snapshots are taken of paused VMs only.
    #[error("the VM is {0:?}: pause it (Vm::pause) before taking a snapshot")]
    NotPaused(crate::VmState),
    /// The parked vCPUs did not hand over their state in time.
    #[error("vCPU {index} did not save its state within {timeout:?}")]
    CaptureTimeout {
        /// The vCPU.
        index: usize,
        /// How long it was given.
        timeout: std::time::Duration,
    },
    /// The VM ended while its state was being saved.
    #[error("the VM ended while its state was being saved: {0}")]
    Exited(crate::ExitReason),
    /// `KVM_GET_MSR_INDEX_LIST` failed.
    #[error("KVM_GET_MSR_INDEX_LIST failed: {0}")]
    MsrList(#[source] kvm_ioctls::Error),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The firmware file does not parse, or does not fit the VM's firmware.
    #[error("{path}: {why}")]
    Firmware {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The state file's envelope is wrong (magic, version, length, checksum).
    #[error("{path}: {source}")]
    Format {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// The state file's payload is damaged.
    #[error("{path}: {source}")]
    Codec {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: CodecError,
    },
    /// The memory file.
    #[error(transparent)]
    Memory(#[from] MemoryFileError),
    /// Saving or restoring a vCPU.
    #[error(transparent)]
    Vcpu(#[from] VcpuStateError),
    /// Saving or restoring the irqchip, PIT or clock.
    #[error(transparent)]
    Machine(#[from] MachineStateError),
    /// Saving, matching or restoring devices.
    #[error(transparent)]
    Devices(#[from] DeviceSnapshotError),
    /// The configuration has another vCPU count than the snapshot.
    #[error(
        "the snapshot is of a {saved}-vCPU VM, the configuration asks for {configured}: restore with the configuration the snapshot was taken with"
    )]
    VcpuCount {
        /// vCPUs in the snapshot.
        saved: u32,
        /// vCPUs configured.
        configured: u8,
    },
    /// The configuration has another RAM size than the snapshot.
    #[error(
        "the snapshot is of a VM with {saved:#x} bytes of RAM, the configuration asks for {configured:#x}: restore with the configuration the snapshot was taken with"
    )]
    MemorySize {
        /// RAM in the snapshot.
        saved: u64,
        /// RAM configured.
        configured: u64,
    },
}

/// What [`crate::Vm::snapshot`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Size of the state file.
    pub state_bytes: u64,
    /// Guest RAM bytes written to the memory file (its zero pages are holes).
    pub memory_bytes_written: u64,
    /// The memory file's size: all of guest RAM.
    pub memory_size: u64,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename, so a reader sees the
/// old file or the new one, never half of one (and a VM mapped from the old one keeps it).
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SnapshotError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming into place", &path))
}

/// Creates `dir` (and its parents) if missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), SnapshotError> {
    std::fs::create_dir_all(dir).map_err(io("creating the snapshot directory", dir))
}

/// Writes guest RAM to `dir`'s memory file through a temporary file and a rename, with
/// snapshot `id` in its trailer.
pub(crate) fn write_memory(
    mem: &crate::memory::GuestMemoryMmap,
    dir: &Path,
    id: u64,
) -> Result<(memory::MemoryLayout, u64), SnapshotError> {
    let tmp = dir.join(format!(".{MEMORY_FILE}.tmp"));
    let path = dir.join(MEMORY_FILE);
    let written = write_memory_file(mem, &tmp, id)?;
    std::fs::rename(&tmp, &path).map_err(io("renaming into place", &path))?;
    Ok(written)
}

/// A snapshot read from its directory and checked, ready to restore.
#[derive(Debug)]
pub(crate) struct LoadedSnapshot {
    /// The decoded state.
    pub state: SnapshotState,
    /// The memory file, its size checked against the layout.
    pub memory_file: File,
    /// Its path, for errors.
    pub memory_path: PathBuf,
}

impl LoadedSnapshot {
    /// Reads `dir`'s state file (envelope and payload) and opens its memory file, checking
    /// both against each other and against the configuration's vCPU count and RAM size.
    pub fn load(dir: &Path, vcpus: u8, memory_size: u64) -> Result<Self, SnapshotError> {
        let state_path = dir.join(STATE_FILE);
        let bytes = std::fs::read(&state_path).map_err(io("reading", &state_path))?;
        let payload = format::open(&bytes).map_err(|source| SnapshotError::Format {
            path: state_path.clone(),
            source,
        })?;
        let state = SnapshotState::decode(payload).map_err(|source| SnapshotError::Codec {
            path: state_path.clone(),
            source,
        })?;
        if state.vcpus != u32::from(vcpus) {
            return Err(SnapshotError::VcpuCount {
                saved: state.vcpus,
                configured: vcpus,
            });
        }
        if state.memory_size != memory_size {
            return Err(SnapshotError::MemorySize {
                saved: state.memory_size,
                configured: memory_size,
            });
        }
        let memory_path = dir.join(MEMORY_FILE);
        let memory_file = memory::open_memory_file(&memory_path, &state.layout, state.memory_id)?;
        Ok(LoadedSnapshot {
            state,
            memory_file,
            memory_path,
        })
    }
}

/// A fresh snapshot id: 64 random bits from the kernel (time and pid if that fails), so two
/// snapshots' files are never taken for a pair.
pub(crate) fn new_snapshot_id() -> u64 {
    let mut id = [0u8; 8];
    // SAFETY: getrandom writes at most `id.len()` bytes into the buffer it is given, which is
    // valid and exclusively borrowed for the call.
    let n = unsafe { libc::getrandom(id.as_mut_ptr().cast(), id.len(), 0) };
    if n == id.len() as isize {
        return u64::from_le_bytes(id);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Checks a sealed state's envelope and returns its payload.
pub(crate) fn open_sealed(bytes: &[u8]) -> Result<&[u8], FormatError> {
    format::open(bytes)
}

/// Seals a payload in the state file's envelope.
pub(crate) fn seal(payload: &[u8]) -> Vec<u8> {
    format::seal(payload)
}
