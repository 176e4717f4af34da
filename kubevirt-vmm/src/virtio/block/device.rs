//! The virtio-blk device: configuration space, features, and a worker thread per activation.

use std::sync::{Arc, Mutex};

use super::backend::BlockBackend;
use super::migration::{DiskMigration, MigrationDisk};
use super::write_log::{Tracked, WriteLog};
use super::error_policy::ErrorPolicy;
use super::queue::{BlockQueue, SharedDisk, StopOnError};
use crate::vm::lifecycle::Lifecycle;
use super::request::{MAX_SEGMENT_SECTORS, MAX_SEGMENTS, SECTOR_SIZE, SERIAL_LEN};
use crate::virtio::VIRTIO_RING_F_INDIRECT_DESC;
use crate::bus::DeviceStateError;
use crate::virtio::device::{
    ActivateContext, ActivateError, VirtioDevice, pause_worker, read_config_bytes, resume_worker,
};
use crate::virtio::worker::Worker;

/// The virtio device type of a block device.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Entries in the request queue.
pub const QUEUE_SIZE: u16 = 256;

/// `VIRTIO_BLK_F_SEG_MAX`.
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
/// `VIRTIO_BLK_F_RO`.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// `VIRTIO_BLK_F_BLK_SIZE`.
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
/// `VIRTIO_BLK_F_FLUSH`.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
/// `VIRTIO_BLK_F_DISCARD`.
pub const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
/// `VIRTIO_BLK_F_WRITE_ZEROES`.
pub const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;

/// Length of `struct virtio_blk_config` as this device fills it.
pub const CONFIG_LEN: usize = 60;

/// A virtio-blk disk.
pub struct Block {
    disk: SharedDisk,
    serial: [u8; SERIAL_LEN],
    config: [u8; CONFIG_LEN],
    features: u64,
    worker: Option<Worker<BlockQueue>>,
    migration: DiskMigration,
    /// The guest's writes while a migration copies the disk.
    log: Arc<WriteLog>,
    /// What a backend error does ([`ErrorPolicy`]).
    error_policy: ErrorPolicy,
    /// The VM, which a stopping error policy pauses.
    lifecycle: Option<Arc<Lifecycle>>,
    /// Its name in logs and errors, if the embedder gave one.
    name: Option<String>,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("features", &format_args!("{:#x}", self.features))
            .field("active", &self.worker.is_some())
            .finish()
    }
}

/// The `serial` as `GET_ID` returns it: at most 20 bytes, zero-padded.
pub fn serial_bytes(serial: &str) -> [u8; SERIAL_LEN] {
    let mut out = [0u8; SERIAL_LEN];
    let n = serial.len().min(SERIAL_LEN);
    out[..n].copy_from_slice(&serial.as_bytes()[..n]);
    out
}

impl Block {
    /// A disk on `backend` with `serial` (KubeVirt's `disk.serial`; truncated to 20 bytes).
    pub fn new(backend: Box<dyn BlockBackend>, serial: &str) -> Self {
        let sectors = backend.size() / SECTOR_SIZE;
        let read_only = backend.read_only();
        let mut features =
            VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_RING_F_INDIRECT_DESC;
        // Without a volatile cache (write-through) there is nothing to flush: the driver then
        // treats every completed write as durable.
        if backend.has_volatile_cache() {
            features |= VIRTIO_BLK_F_FLUSH;
        }
        if read_only {
            features |= VIRTIO_BLK_F_RO;
        } else {
            features |= VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES;
        }
        let mut config = [0u8; CONFIG_LEN];
        let mut put = |offset: usize, bytes: &[u8]| {
            config[offset..offset + bytes.len()].copy_from_slice(bytes)
        };
        put(0, &sectors.to_le_bytes());
        put(12, &u32::from(QUEUE_SIZE - 2).to_le_bytes()); // seg_max
        put(20, &(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
        put(34, &1u16.to_le_bytes()); // num_queues
        put(36, &MAX_SEGMENT_SECTORS.to_le_bytes()); // max_discard_sectors
        put(40, &MAX_SEGMENTS.to_le_bytes()); // max_discard_seg
        put(44, &1u32.to_le_bytes()); // discard_sector_alignment
        put(48, &MAX_SEGMENT_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
        put(52, &MAX_SEGMENTS.to_le_bytes()); // max_write_zeroes_seg
        put(56, &[1]); // write_zeroes_may_unmap
        let (tracked, log) = Tracked::wrap(backend);
        Block {
            disk: Arc::new(Mutex::new(Box::new(tracked))),
            log,
            serial: serial_bytes(serial),
            config,
            features,
            worker: None,
            migration: DiskMigration::Shared,
            error_policy: ErrorPolicy::Report,
            lifecycle: None,
            name: None,
        }
    }

    /// Says what a backend error does (default [`ErrorPolicy::Report`]; KubeVirt's default is
    /// [`ErrorPolicy::Stop`]). A stopping policy needs the device to be added to a VM through
    /// [`crate::VmBuilder::virtio_device`], which it pauses.
    pub fn with_error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.error_policy = policy;
        self
    }

    /// Says how the disk migrates (default [`DiskMigration::Shared`]: the target opens the
    /// same image, only the lock moves).
    pub fn with_migration(mut self, mode: DiskMigration) -> Self {
        self.migration = mode;
        self
    }

    /// Names the disk in logs and errors (e.g. [`crate::DiskIoError::disk`]); default: its
    /// serial, or `virtio-blk` without one.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// The disk's name in logs and errors.
    fn name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let end = self.serial.iter().position(|&b| b == 0).unwrap_or(SERIAL_LEN);
        match std::str::from_utf8(&self.serial[..end]) {
            Ok(s) if !s.is_empty() => s.to_string(),
            _ => "virtio-blk".to_string(),
        }
    }

    /// The backend, e.g. to check it after the VM ran.
    pub fn disk(&self) -> SharedDisk {
        self.disk.clone()
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError> {
        let ActivateContext {
            memory,
            queues,
            interrupt,
            health,
            ..
        } = context;
        let Some(q) = queues.into_iter().next().filter(|q| q.queue.ready()) else {
            return Err(ActivateError::QueueNotReady(0));
        };
        use virtio_queue::QueueT;
        let mut handler = BlockQueue::new(
            memory,
            q.queue,
            self.disk.clone(),
            self.serial,
            interrupt,
            health,
        )
        .with_policy(self.error_policy);
        if let (ErrorPolicy::Stop | ErrorPolicy::Enospace, Some(lifecycle)) =
            (self.error_policy, &self.lifecycle)
        {
            handler = handler.with_stop(StopOnError {
                lifecycle: lifecycle.clone(),
                wake: q.event.try_clone().map_err(ActivateError::Worker)?,
                disk: self.name(),
            });
        }
        let worker = Worker::spawn("virtio-blk".into(), vec![q.event], handler)
            .map_err(ActivateError::Worker)?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker stops its thread; the disk stays with the device.
        self.worker = None;
    }

    fn pause(&mut self) -> Result<Vec<virtio_queue::QueueState>, DeviceStateError> {
        let states = pause_worker(self.worker.as_mut())?;
        // Completed writes reach the disk before the snapshot's memory says they completed.
        self.disk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .flush()
            .map_err(|e| DeviceStateError::Failed(format!("flushing the disk: {e}")))?;
        Ok(states)
    }

    fn resume(&mut self) -> Result<(), DeviceStateError> {
        resume_worker(self.worker.as_mut())
    }

    fn attach_lifecycle(&mut self, lifecycle: Arc<Lifecycle>) {
        self.lifecycle = Some(lifecycle);
    }

    fn migration_disk(&self) -> Option<MigrationDisk> {
        Some(MigrationDisk {
            disk: self.disk.clone(),
            mode: self.migration,
            log: self.log.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::VirtioDevice;
    use crate::virtio::block::{CacheMode, RawFile};

    #[test]
    fn flush_is_offered_only_with_a_volatile_cache() {
        let t = vmm_sys_util::tempfile::TempFile::new().unwrap();
        t.as_file().set_len(1 << 20).unwrap();
        for (mode, flush) in [
            (CacheMode::Writethrough, false),
            (CacheMode::Writeback, true),
            (CacheMode::None, true),
        ] {
            let disk = RawFile::open_with_cache(t.as_path(), false, mode).unwrap();
            let block = Block::new(Box::new(disk), "cache");
            assert_eq!(
                block.features() & VIRTIO_BLK_F_FLUSH != 0,
                flush,
                "FLUSH for cache={mode}"
            );
        }
    }
}
