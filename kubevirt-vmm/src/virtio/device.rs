//! The [`VirtioDevice`] trait: what a device type implements to sit behind a transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use virtio_queue::{Queue, QueueState};
use crate::memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::bus::DeviceStateError;
use crate::virtio::worker::{QueueHandler, Worker};

/// What a device signals to the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioInterruptType {
    /// The configuration space changed (or the device needs a reset).
    Config,
    /// Queue `n` has used buffers.
    Queue(u16),
}

/// How a device interrupts the driver; the transport implements it (ISR bits, MSI-X).
pub trait VirtioInterrupt: Send + Sync {
    /// Signals `kind` to the driver.
    fn trigger(&self, kind: VirtioInterruptType) -> std::io::Result<()>;
}

/// Set by a device whose queue the driver corrupted; the transport then reports
/// `DEVICE_NEEDS_RESET` in the status register.
#[derive(Clone, Debug, Default)]
pub struct HealthFlag(Arc<AtomicBool>);

impl HealthFlag {
    /// Marks the device broken until the driver resets it.
    pub fn mark_broken(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the device is broken.
    pub fn is_broken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Clears the flag (device reset).
    pub fn clear(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One queue handed to a device on activation.
#[derive(Debug)]
pub struct DeviceQueue {
    /// The queue, configured and ready, validated against guest memory.
    pub queue: Queue,
    /// Signalled when the driver notifies the queue (an ioeventfd under KVM).
    pub event: EventFd,
}

/// Everything a device needs once the driver sets `DRIVER_OK`.
pub struct ActivateContext {
    /// Guest memory, for the queues' buffers.
    pub memory: GuestMemoryMmap,
    /// The queues, in index order.
    pub queues: Vec<DeviceQueue>,
    /// How to interrupt the driver.
    pub interrupt: Arc<dyn VirtioInterrupt>,
    /// Where to report a driver error that needs a reset.
    pub health: HealthFlag,
    /// The features the driver acknowledged (a subset of [`VirtioDevice::features`]).
    pub acked_features: u64,
}

impl std::fmt::Debug for ActivateContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivateContext")
            .field("queues", &self.queues.len())
            .field(
                "acked_features",
                &format_args!("{:#x}", self.acked_features),
            )
            .finish()
    }
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver left a queue the device needs disabled.
    #[error("queue {0} is not enabled by the driver")]
    QueueNotReady(usize),
    /// Duplicating a queue eventfd or spawning the worker failed.
    #[error("starting the device worker: {0}")]
    Worker(#[source] std::io::Error),
}

/// A virtio device type (block, rng, console, ...), independent of the transport.
///
/// The transport owns feature negotiation, queue configuration and the status machine; the
/// device gives its type, queues, features and configuration space, and processes its queues
/// from [`VirtioDevice::activate`] until [`VirtioDevice::reset`].
pub trait VirtioDevice: Send {
    /// The virtio device ID (2 = block, 3 = console, 4 = rng, ...).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue; the number of queues is its length.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers (the transport adds [`super::VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;
    /// Reads the device-specific configuration space at `offset`; bytes past its end read 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write to the configuration space; ignored unless the device has writable fields.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let _ = (offset, data);
    }
    /// Starts processing queues.
    fn activate(&mut self, context: ActivateContext) -> Result<(), ActivateError>;
    /// Stops processing and drops the queues: the driver reset the device.
    fn reset(&mut self);

    /// Stops processing for a snapshot (the vCPUs are parked) and returns each queue's state,
    /// in queue order; the queues hold still until [`VirtioDevice::resume`]. Called on an
    /// activated device only. Host-side input the device holds but has not placed in guest
    /// memory (a received frame waiting for a buffer) is not part of the state. Default:
    /// [`DeviceStateError::Unsupported`], so a VM holding a device that cannot pause is
    /// refused a snapshot rather than given a wrong one.
    fn pause(&mut self) -> Result<Vec<QueueState>, DeviceStateError> {
        Err(DeviceStateError::Unsupported(
            "this virtio device cannot pause its queues",
        ))
    }

    /// Continues after [`VirtioDevice::pause`].
    fn resume(&mut self) -> Result<(), DeviceStateError> {
        Ok(())
    }

    /// The device's disk, if it is one, for live migration (its lock handover and, for
    /// disks that live with the VMI, the copy of its contents). Default: not a disk.
    fn migration_disk(&self) -> Option<crate::virtio::block::MigrationDisk> {
        None
    }

    /// The VM the device is part of, given when it is added ([`crate::VmBuilder::virtio_device`]):
    /// a disk whose error policy stops pauses it. Default: not needed.
    fn attach_lifecycle(&mut self, _lifecycle: Arc<crate::vm::lifecycle::Lifecycle>) {}
}

/// [`VirtioDevice::pause`] for a device whose queues live in one worker.
pub fn pause_worker<H: QueueHandler>(
    worker: Option<&mut Worker<H>>,
) -> Result<Vec<QueueState>, DeviceStateError> {
    let worker = worker.ok_or_else(|| {
        DeviceStateError::Failed("the device is not processing its queues".into())
    })?;
    worker
        .pause()
        .map_err(|e| DeviceStateError::Failed(e.to_string()))
}

/// [`VirtioDevice::resume`] for a device whose queues live in one worker.
pub fn resume_worker<H: QueueHandler>(
    worker: Option<&mut Worker<H>>,
) -> Result<(), DeviceStateError> {
    match worker {
        Some(w) => w
            .resume()
            .map_err(|e| DeviceStateError::Failed(e.to_string())),
        None => Ok(()),
    }
}

impl std::fmt::Debug for dyn VirtioDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VirtioDevice(type {})", self.device_type())
    }
}

/// Copies `config[offset..]` into `data`, zero-filling past the end: the usual
/// [`VirtioDevice::read_config`] for a device whose configuration is a byte array.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bytes_are_bounded_and_zero_filled() {
        let cfg = [1u8, 2, 3, 4];
        let mut d = [9u8; 4];
        read_config_bytes(&cfg, 2, &mut d);
        assert_eq!(d, [3, 4, 0, 0]);
        read_config_bytes(&cfg, 100, &mut d);
        assert_eq!(d, [0; 4]);
        read_config_bytes(&cfg, u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
    }

    #[test]
    fn health_flag_is_shared() {
        let a = HealthFlag::default();
        let b = a.clone();
        b.mark_broken();
        assert!(a.is_broken());
        a.clear();
        assert!(!b.is_broken());
    }
}
