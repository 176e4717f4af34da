//! Taking a snapshot of a paused VM, and building a VM from one (see [`crate::snapshot`]).

use std::path::Path;
use std::time::Duration;

use super::assemble::Restored;
use super::{PAUSE_TIMEOUT, Vm, VmBuilder, VmConfig, VmError};
use crate::memory;
use crate::snapshot::{
    self, LoadedSnapshot, MachineState, SnapshotError, SnapshotInfo, SnapshotState,
    map_memory_file, resume_devices, save_devices,
};

/// How long the parked vCPUs get to hand over their state.
const SAVE_TIMEOUT: Duration = PAUSE_TIMEOUT;

impl Vm {
    /// Saves this paused VM to `dir` (created if missing; earlier snapshot files there are
    /// replaced, each through a rename, so a VM restored from them keeps its mapping). The VM
    /// stays paused: resume it, or stop it.
    ///
    /// ```no_run
    /// # fn demo(vm: &kubevirt_vmm::Vm, config: kubevirt_vmm::VmConfig) -> Result<(), kubevirt_vmm::VmError> {
    /// vm.pause()?;
    /// vm.snapshot("/var/lib/vm/snap".as_ref())?;
    /// vm.stop();
    /// // Later, maybe in another process, with the same configuration:
    /// let restored = kubevirt_vmm::Vm::restore(config, "/var/lib/vm/snap".as_ref())?;
    /// restored.start()?; // the guest continues where it was paused
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`VmError::Snapshot`]: the VM is not paused, a vCPU or the irqchip cannot be read, a
    /// device cannot save its state (fw_cfg cannot yet), or a file cannot be written.
    pub fn snapshot(&self, dir: &Path) -> Result<SnapshotInfo, VmError> {
        let vcpu_states = self.lifecycle.save_vcpu_states(SAVE_TIMEOUT)?;
        let result = self.write_snapshot(dir, vcpu_states);
        // Devices that paused their workers for the cut go on, whether or not it was written.
        resume_devices(&self.buses);
        result
    }

    fn write_snapshot(
        &self,
        dir: &Path,
        vcpu_states: Vec<snapshot::VcpuState>,
    ) -> Result<SnapshotInfo, VmError> {
        let devices = save_devices(&self.buses).map_err(SnapshotError::from)?;
        let machine = MachineState::save(&self.vm_fd).map_err(SnapshotError::from)?;
        snapshot::create_dir(dir)?;
        let memory_id = snapshot::new_snapshot_id();
        let (layout, memory_bytes_written) =
            snapshot::write_memory(&self.memory, dir, memory_id)?;
        let memory_size = layout.file_size();
        let state = SnapshotState {
            vcpus: vcpu_states.len() as u32,
            memory_size,
            memory_id,
            layout,
            machine,
            vcpu_states,
            devices,
        };
        // The firmware's variable store: guest-written memory outside RAM.
        match self.firmware_state() {
            Some(f) => snapshot::write_atomically(
                dir,
                snapshot::FIRMWARE_FILE,
                &snapshot::seal(&f.encode()),
            )?,
            None => match std::fs::remove_file(dir.join(snapshot::FIRMWARE_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(SnapshotError::Io {
                        op: "removing an earlier snapshot's",
                        path: dir.join(snapshot::FIRMWARE_FILE),
                        source: e,
                    }
                    .into());
                }
                _ => {}
            },
        }
        let file = snapshot::seal(&state.encode());
        snapshot::write_atomically(dir, snapshot::STATE_FILE, &file)?;
        Ok(SnapshotInfo {
            state_bytes: file.len() as u64,
            memory_bytes_written,
            memory_size,
        })
    }

    /// Builds a VM from the snapshot in `dir` with the standard devices (see
    /// [`VmBuilder::restore`] to add more). [`Vm::start`] resumes the guest.
    ///
    /// # Errors
    /// As [`VmBuilder::restore`].
    pub fn restore(config: VmConfig, dir: &Path) -> Result<Vm, VmError> {
        VmBuilder::new(config).restore(dir)
    }
}

impl VmBuilder {
    /// Builds the VM from the snapshot in `dir` instead of booting `config.boot`: guest RAM
    /// is mapped from the snapshot (lazily, copy-on-write), vCPUs, irqchip, clock and devices
    /// get their saved state, and [`Vm::start`] resumes the guest where it was. The
    /// configuration must be the one the snapshot was taken with, and the builder must have
    /// the same extra devices (see [`crate::snapshot`]).
    ///
    /// # Errors
    /// [`VmError::Snapshot`] when the snapshot is unreadable, of another format version,
    /// corrupt, truncated, or does not match the configuration or the devices (checked before
    /// anything runs); otherwise as [`VmBuilder::build`].
    pub fn restore(self, dir: &Path) -> Result<Vm, VmError> {
        let snapshot =
            LoadedSnapshot::load(dir, self.config.vcpus, self.config.memory_size)?;
        let memory = map_memory_file(
            &snapshot.memory_file,
            &snapshot.memory_path,
            &snapshot.state.layout,
            &memory::ram_ranges(self.config.memory_size),
            self.config.memory.prefault,
        )
        .map_err(SnapshotError::from)?;
        let firmware = load_firmware(dir)?;
        let vm = self.build_from(Some(Restored {
            state: snapshot.state,
            memory,
        }))?;
        if let Some(f) = &firmware {
            vm.load_firmware_state(Some(f))
                .map_err(|why| SnapshotError::Firmware {
                    path: dir.join(crate::snapshot::FIRMWARE_FILE),
                    why,
                })?;
        }
        Ok(vm)
    }

}

/// Reads the firmware state of the snapshot in `dir`, if it has one (snapshots of VMs that
/// boot no firmware, and those taken before the file existed, have none).
pub(super) fn load_firmware(
    dir: &Path,
) -> Result<Option<crate::boot::firmware::FirmwareState>, SnapshotError> {
    let path = dir.join(snapshot::FIRMWARE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Io {
                op: "reading",
                path,
                source,
            });
        }
    };
    let payload = snapshot::open_sealed(&bytes).map_err(|source| SnapshotError::Format {
        path: path.clone(),
        source,
    })?;
    crate::boot::firmware::FirmwareState::decode(payload)
        .map(Some)
        .map_err(|why| SnapshotError::Firmware { path, why })
}
