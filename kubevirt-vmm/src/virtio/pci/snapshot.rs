//! A virtio-pci function's state in a snapshot: its configuration space, the common
//! configuration, the ISR, the MSI-X table and, for a started device, each queue's position.
//!
//! Saving a started device pauses its worker ([`VirtioDevice::pause`]) so the queues hold
//! still while guest memory is written; [`VirtioPciDevice::resume_after_snapshot`] lets it
//! go on. Restoring re-installs the MSI routes of deliverable vectors, moves the notify
//! ioeventfds to the saved BAR 0, and starts the device on queues placed where the driver
//! left them, at the saved ring positions.

use std::sync::atomic::Ordering;

use virtio_queue::QueueState;

use super::VirtioPciDevice;
use super::common_cfg::{CommonConfig, QueueRegs};
use crate::bus::DeviceStateError;
use crate::snapshot::CodecError;
use crate::snapshot::codec::{Decoder, Encoder, field};

/// Queues a transport has at most (the notification region's limit).
const MAX_QUEUES: usize = 1024;

fn invalid(e: CodecError) -> DeviceStateError {
    DeviceStateError::Invalid(e.to_string())
}

fn save_common(c: &CommonConfig, e: &mut Encoder) {
    e.u32(c.device_feature_select);
    e.u32(c.driver_feature_select);
    e.u64(c.driver_features);
    e.u8(c.status);
    e.u8(c.config_generation);
    e.u32(u32::from(c.msix_config));
    e.u32(u32::from(c.queue_select));
    e.len(c.queues.len());
    for q in &c.queues {
        e.u32(u32::from(q.max_size));
        e.u32(u32::from(q.size));
        e.u8(u8::from(q.enabled));
        e.u64(q.desc);
        e.u64(q.avail);
        e.u64(q.used);
        e.u32(u32::from(q.msix_vector));
    }
}

fn u16_field(d: &mut Decoder<'_>, what: &dyn Fn() -> String) -> Result<u16, CodecError> {
    let v = d.u32(what)?;
    u16::try_from(v).map_err(|_| CodecError::Inconsistent(format!("{} is {v}", what())))
}

/// Reads the common configuration into `c`, whose queues (count and maximum sizes) are the
/// device's own and must match.
fn restore_common(c: &mut CommonConfig, d: &mut Decoder<'_>) -> Result<(), CodecError> {
    c.device_feature_select = d.u32(&field("device_feature_select"))?;
    c.driver_feature_select = d.u32(&field("driver_feature_select"))?;
    c.driver_features = d.u64(&field("driver features"))?;
    c.status = d.u8(&field("device status"))?;
    c.config_generation = d.u8(&field("config_generation"))?;
    c.msix_config = u16_field(d, &field("msix_config"))?;
    c.queue_select = u16_field(d, &field("queue_select"))?;
    let n = d.len(MAX_QUEUES, &field("queue count"))?;
    if n != c.queues.len() {
        return Err(CodecError::Inconsistent(format!(
            "the snapshot has {n} queues, the device {}",
            c.queues.len()
        )));
    }
    for (i, q) in c.queues.iter_mut().enumerate() {
        let what = || format!("queue {i} registers");
        let max_size = u16_field(d, &what)?;
        if max_size != q.max_size {
            return Err(CodecError::Inconsistent(format!(
                "queue {i} holds at most {max_size} entries in the snapshot, {} in the device",
                q.max_size
            )));
        }
        *q = QueueRegs {
            max_size,
            size: u16_field(d, &what)?,
            enabled: d.u8(&what)? != 0,
            desc: d.u64(&what)?,
            avail: d.u64(&what)?,
            used: d.u64(&what)?,
            msix_vector: u16_field(d, &what)?,
        };
    }
    Ok(())
}

fn save_positions(positions: &[QueueState], e: &mut Encoder) {
    e.len(positions.len());
    for p in positions {
        e.u32(u32::from(p.next_avail));
        e.u32(u32::from(p.next_used));
        e.u8(u8::from(p.event_idx_enabled));
    }
}

/// The saved positions, as states of queues `regs` describes.
fn restore_positions(
    regs: &[QueueRegs],
    d: &mut Decoder<'_>,
) -> Result<Vec<QueueState>, CodecError> {
    let n = d.len(MAX_QUEUES, &field("queue positions"))?;
    if n != regs.len() {
        return Err(CodecError::Inconsistent(format!(
            "the snapshot has positions of {n} queues, the device has {}",
            regs.len()
        )));
    }
    regs.iter()
        .enumerate()
        .map(|(i, r)| {
            let what = || format!("queue {i} position");
            Ok(QueueState {
                max_size: r.max_size,
                next_avail: u16_field(d, &what)?,
                next_used: u16_field(d, &what)?,
                event_idx_enabled: d.u8(&what)? != 0,
                size: r.size,
                ready: r.enabled,
                desc_table: r.desc,
                avail_ring: r.avail,
                used_ring: r.used,
            })
        })
        .collect()
}

impl VirtioPciDevice {
    /// See the module documentation.
    pub(super) fn save_snapshot(&mut self) -> Result<Vec<u8>, DeviceStateError> {
        let positions = if self.active {
            Some(self.device.pause()?)
        } else {
            None
        };
        let mut e = Encoder::new();
        self.config.save(&mut e);
        save_common(&self.common, &mut e);
        e.u8(self.interrupt.isr.load(Ordering::Acquire));
        e.u8(u8::from(self.health.is_broken()));
        self.interrupt.state().table.save(&mut e);
        match positions {
            None => e.u8(0),
            Some(p) => {
                e.u8(1);
                save_positions(&p, &mut e);
            }
        }
        Ok(e.finish())
    }

    /// See the module documentation. The function must be fresh (not started).
    pub(super) fn restore_snapshot(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        if self.active {
            return Err(DeviceStateError::Invalid(
                "the device is already running".into(),
            ));
        }
        let mut d = Decoder::new(state);
        self.config.restore(&mut d).map_err(invalid)?;
        restore_common(&mut self.common, &mut d).map_err(invalid)?;
        let isr = d.u8(&field("ISR")).map_err(invalid)?;
        let broken = d.u8(&field("device health")).map_err(invalid)? != 0;
        let mut table = self.interrupt.state().table.clone();
        table.restore(&mut d).map_err(invalid)?;
        let positions = match d.u8(&field("started")).map_err(invalid)? {
            0 => None,
            1 => Some(restore_positions(&self.common.queues, &mut d).map_err(invalid)?),
            tag => {
                return Err(invalid(CodecError::BadTag {
                    what: "started".into(),
                    tag,
                }));
            }
        };
        d.finish().map_err(invalid)?;

        self.interrupt.isr.store(isr, Ordering::Release);
        if broken {
            self.health.mark_broken();
        }
        {
            let mut state = self.interrupt.state();
            state.table = table;
            self.interrupt.routes_changed(state, Vec::new());
        }
        self.sync_vectors();
        self.sync_ioevents()
            .map_err(|e| DeviceStateError::Failed(format!("moving the notify ioeventfds: {e}")))?;
        if let Some(positions) = positions {
            self.activate(Some(&positions))
                .map_err(|e| DeviceStateError::Invalid(format!("starting the device: {e}")))?;
        }
        Ok(())
    }

    /// Lets a device paused by [`VirtioPciDevice::save_snapshot`] go on.
    pub(super) fn resume_after_snapshot(&mut self) {
        if self.active
            && let Err(e) = self.device.resume()
        {
            log::error!(
                "virtio-pci: device type {} did not resume after a snapshot: {e}",
                self.device.device_type()
            );
            self.needs_reset();
        }
    }
}
