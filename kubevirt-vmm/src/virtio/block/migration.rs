//! A virtio-blk disk as live migration sees it: the shared backend and whether its contents
//! travel with the guest.
//!
//! A disk on storage both hosts reach (a claim, a hostDisk, a read-only base) stays where it
//! is: only its lock is handed over (`lock.rs`). A disk that lives with the VMI (a
//! containerDisk's overlay, an emptyDisk) is recreated fresh on the target and its contents
//! the guest wrote are copied over the migration stream, as libvirt's block migration does.

use std::sync::{Arc, PoisonError};

use super::backend::BackendError;
use super::queue::SharedDisk;
use super::write_log::WriteLog;

/// How a disk migrates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskMigration {
    /// Both sides open the same image; only its lock moves (claims, hostDisks, read-only
    /// images the target has as well).
    #[default]
    Shared,
    /// The target has a fresh image of the same size; the guest's writes are copied
    /// (containerDisk overlays, emptyDisks).
    Copy,
}

/// One disk of a VM, for the migration code.
#[derive(Clone)]
pub struct MigrationDisk {
    /// The backend the device uses.
    pub disk: SharedDisk,
    /// How it migrates.
    pub mode: DiskMigration,
    /// The guest's writes, tracked while a migration copies the disk.
    pub log: Arc<WriteLog>,
}

impl std::fmt::Debug for MigrationDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MigrationDisk")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl MigrationDisk {
    /// The disk size in bytes.
    pub fn size(&self) -> u64 {
        self.disk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .size()
    }

    /// See [`super::BlockBackend::inactivate`].
    pub fn inactivate(&self) -> Result<(), BackendError> {
        self.disk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inactivate()
    }

    /// See [`super::BlockBackend::activate`].
    pub fn activate(&self) -> Result<(), BackendError> {
        self.disk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .activate()
    }
}

/// Inactivates every disk of `disks` (flushed first); on the first failure activates again
/// the ones done and returns it, with the disk's index.
pub(crate) fn inactivate_all(disks: &[MigrationDisk]) -> Result<(), (usize, BackendError)> {
    for (i, d) in disks.iter().enumerate() {
        if let Err(e) = d.inactivate() {
            for done in &disks[..i] {
                let _ = done.activate();
            }
            return Err((i, e));
        }
    }
    Ok(())
}

/// Activates every disk of `disks`; on the first failure inactivates again the ones done
/// and returns it, with the disk's index.
pub(crate) fn activate_all(disks: &[MigrationDisk]) -> Result<(), (usize, BackendError)> {
    for (i, d) in disks.iter().enumerate() {
        if let Err(e) = d.activate() {
            for done in &disks[..i] {
                let _ = done.inactivate();
            }
            return Err((i, e));
        }
    }
    Ok(())
}
