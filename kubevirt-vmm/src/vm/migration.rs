//! What live migration (see [`crate::migration`]) needs of a VM and of the builder of the VM
//! that receives it: the run state, devices and VM fd it drives, the disks it copies or hands
//! over, and building a VM over guest RAM that already holds the guest.

use std::sync::PoisonError;

use kvm_ioctls::VmFd;

use super::assemble::Restored;
use super::{Lifecycle, Vm, VmBuilder, VmError};
use crate::memory::GuestMemoryMmap;
use crate::snapshot::SnapshotState;
use crate::vcpu::Buses;
use crate::virtio::block::{DiskMigration, MigrationDisk};

impl VmBuilder {
    /// (received by a live migration), as [`VmBuilder::restore`] does from a snapshot file.
    pub(crate) fn build_restored(
        self,
        state: SnapshotState,
        memory: GuestMemoryMmap,
    ) -> Result<Vm, VmError> {
        self.build_from(Some(Restored { state, memory }))
    }

    /// The disks added so far, in order (a migration target receives into them).
    pub(crate) fn migration_disks(&self) -> Vec<MigrationDisk> {
        self.virtio
            .iter()
            .filter_map(|d| d.migration_disk())
            .collect()
    }
}

impl Vm {
    /// The pieces live migration drives: run state, devices, KVM VM fd.
    pub(crate) fn migration_parts(&self) -> (&Lifecycle, &Buses, &VmFd) {
        (&self.lifecycle, &self.buses, &self.vm_fd)
    }

    /// Bytes a live migration would copy of this VM's disks now: what the guest has written
    /// to the disks that migrate by copy (`DiskMigration::Copy`: their allocated extents), as
    /// upstream adds the ephemeral disks' sizes to the data a block migration's
    /// `completionTimeoutPerGiB` scales with. 0 without such disks.
    pub fn migration_disk_bytes(&self) -> u64 {
        self.disks
            .iter()
            .filter(|d| d.mode == DiskMigration::Copy)
            .map(|d| {
                let mut disk = d.disk.lock().unwrap_or_else(PoisonError::into_inner);
                match disk.allocated_extents() {
                    Ok(extents) => extents.iter().map(|e| e.1).sum(),
                    Err(_) => disk.size(),
                }
            })
            .sum()
    }


    /// The VM's disks in the order added (live migration hands over their locks and copies
    /// the ones that live with the VMI).
    pub(crate) fn migration_disks(&self) -> &[MigrationDisk] {
        &self.disks
    }
}
