//! The virtio-pci common configuration structure (virtio 1.2, 4.1.4.3): feature windows,
//! device status and per-queue registers, as plain state the transport owns.

/// "No MSI-X vector" in `msix_config` and `queue_msix_vector`.
pub const NO_VECTOR: u16 = 0xffff;

/// Length of the common configuration structure.
pub const COMMON_CFG_LEN: u64 = 0x38;

/// One queue's registers as the driver programs them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueRegs {
    /// The largest size the device accepts.
    pub max_size: u16,
    /// The size the driver chose (starts at `max_size`).
    pub size: u16,
    /// `queue_enable`.
    pub enabled: bool,
    /// Descriptor table address.
    pub desc: u64,
    /// Available (driver) ring address.
    pub avail: u64,
    /// Used (device) ring address.
    pub used: u64,
    /// MSI-X vector.
    pub msix_vector: u16,
}

impl QueueRegs {
    fn new(max_size: u16) -> Self {
        QueueRegs {
            max_size,
            size: max_size,
            msix_vector: NO_VECTOR,
            ..Default::default()
        }
    }
}

/// The common configuration state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommonConfig {
    /// Which 32-bit word of the device features `device_feature` shows.
    pub device_feature_select: u32,
    /// Which 32-bit word of the driver features `driver_feature` writes.
    pub driver_feature_select: u32,
    /// Features the driver acknowledged.
    pub driver_features: u64,
    /// Device status as the driver set it.
    pub status: u8,
    /// Bumped when the device configuration changes.
    pub config_generation: u8,
    /// The MSI-X vector for configuration changes.
    pub msix_config: u16,
    /// The queue the per-queue registers show.
    pub queue_select: u16,
    /// Every queue's registers.
    pub queues: Vec<QueueRegs>,
}

/// A write the transport must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommonWrite {
    /// Handled here.
    Done,
    /// The driver wrote `device_status`.
    Status(u8),
}

impl CommonConfig {
    /// Reset state for queues of the given maximum sizes.
    pub fn new(queue_max_sizes: &[u16]) -> Self {
        CommonConfig {
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            msix_config: NO_VECTOR,
            queue_select: 0,
            queues: queue_max_sizes.iter().map(|&m| QueueRegs::new(m)).collect(),
        }
    }

    /// Back to the reset state (device status 0).
    pub fn reset(&mut self) {
        let sizes: Vec<u16> = self.queues.iter().map(|q| q.max_size).collect();
        let generation = self.config_generation;
        *self = CommonConfig::new(&sizes);
        self.config_generation = generation;
    }

    fn selected(&self) -> Option<&QueueRegs> {
        self.queues.get(usize::from(self.queue_select))
    }

    /// A driver read of `data.len()` bytes at `offset`; unknown fields and sizes read 0.
    pub fn read(&self, offset: u64, data: &mut [u8], device_features: u64) {
        let q = self.selected();
        let word = |v: u64, hi: bool| if hi { v >> 32 } else { v & 0xffff_ffff };
        let value: u64 = match (offset, data.len()) {
            (0x00, 4) => u64::from(self.device_feature_select),
            (0x04, 4) => match self.device_feature_select {
                0 => word(device_features, false),
                1 => word(device_features, true),
                _ => 0,
            },
            (0x08, 4) => u64::from(self.driver_feature_select),
            (0x0c, 4) => match self.driver_feature_select {
                0 => word(self.driver_features, false),
                1 => word(self.driver_features, true),
                _ => 0,
            },
            (0x10, 2) => u64::from(self.msix_config),
            (0x12, 2) => self.queues.len() as u64,
            (0x14, 1) => u64::from(self.status),
            (0x15, 1) => u64::from(self.config_generation),
            (0x16, 2) => u64::from(self.queue_select),
            (0x18, 2) => q.map_or(0, |q| u64::from(q.size)),
            (0x1a, 2) => q.map_or(u64::from(NO_VECTOR), |q| u64::from(q.msix_vector)),
            (0x1c, 2) => q.map_or(0, |q| u64::from(q.enabled)),
            // queue_notify_off: queue n notifies at n * multiplier.
            (0x1e, 2) => u64::from(self.queue_select),
            (0x20, 8) => q.map_or(0, |q| q.desc),
            (0x20, 4) | (0x24, 4) => q.map_or(0, |q| word(q.desc, offset == 0x24)),
            (0x28, 8) => q.map_or(0, |q| q.avail),
            (0x28, 4) | (0x2c, 4) => q.map_or(0, |q| word(q.avail, offset == 0x2c)),
            (0x30, 8) => q.map_or(0, |q| q.used),
            (0x30, 4) | (0x34, 4) => q.map_or(0, |q| word(q.used, offset == 0x34)),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    /// A driver write at `offset`. Queue registers are frozen while the queue is enabled, and
    /// driver features once `FEATURES_OK` is set.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> CommonWrite {
        let mut raw = [0u8; 8];
        let n = data.len().min(8);
        raw[..n].copy_from_slice(&data[..n]);
        let v = u64::from_le_bytes(raw);
        let features_ok = self.status & super::super::status::FEATURES_OK != 0;
        let set_word = |old: u64, hi: bool, v: u64| {
            if hi {
                (old & 0xffff_ffff) | (v & 0xffff_ffff) << 32
            } else {
                (old & !0xffff_ffff) | (v & 0xffff_ffff)
            }
        };
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = v as u32,
            (0x08, 4) => self.driver_feature_select = v as u32,
            (0x0c, 4) if !features_ok => match self.driver_feature_select {
                0 => self.driver_features = set_word(self.driver_features, false, v),
                1 => self.driver_features = set_word(self.driver_features, true, v),
                _ => {}
            },
            (0x10, 2) => self.msix_config = v as u16,
            (0x14, 1) => return CommonWrite::Status(v as u8),
            (0x16, 2) => self.queue_select = v as u16,
            _ => {
                let select = usize::from(self.queue_select);
                let Some(q) = self.queues.get_mut(select) else {
                    return CommonWrite::Done;
                };
                match (offset, data.len()) {
                    (0x1a, 2) => q.msix_vector = v as u16,
                    (0x1c, 2) if v == 1 => q.enabled = true,
                    _ if q.enabled => {}
                    (0x18, 2) => q.size = v as u16,
                    (0x20, 8) => q.desc = v,
                    (0x20, 4) | (0x24, 4) => q.desc = set_word(q.desc, offset == 0x24, v),
                    (0x28, 8) => q.avail = v,
                    (0x28, 4) | (0x2c, 4) => q.avail = set_word(q.avail, offset == 0x2c, v),
                    (0x30, 8) => q.used = v,
                    (0x30, 4) | (0x34, 4) => q.used = set_word(q.used, offset == 0x34, v),
                    _ => {}
                }
            }
        }
        CommonWrite::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(c: &CommonConfig, off: u64, len: usize) -> u64 {
        let mut d = vec![0u8; len];
        c.read(off, &mut d, 0x1_0000_0206);
        let mut b = [0u8; 8];
        b[..len].copy_from_slice(&d);
        u64::from_le_bytes(b)
    }

    fn w(c: &mut CommonConfig, off: u64, len: usize, v: u64) -> CommonWrite {
        c.write(off, &v.to_le_bytes()[..len])
    }

    #[test]
    fn feature_windows_select_32_bit_words() {
        let mut c = CommonConfig::new(&[256]);
        assert_eq!(r(&c, 0x04, 4), 0x206);
        w(&mut c, 0x00, 4, 1);
        assert_eq!(r(&c, 0x04, 4), 1);
        w(&mut c, 0x00, 4, 7);
        assert_eq!(r(&c, 0x04, 4), 0);
        w(&mut c, 0x0c, 4, 0x200);
        w(&mut c, 0x08, 4, 1);
        w(&mut c, 0x0c, 4, 1);
        assert_eq!(c.driver_features, 0x1_0000_0200);
        assert_eq!(r(&c, 0x0c, 4), 1);
    }

    #[test]
    fn queue_registers_follow_select_and_freeze_when_enabled() {
        let mut c = CommonConfig::new(&[256, 64]);
        assert_eq!(r(&c, 0x12, 2), 2);
        w(&mut c, 0x16, 2, 1);
        assert_eq!(r(&c, 0x18, 2), 64);
        assert_eq!(r(&c, 0x1e, 2), 1);
        w(&mut c, 0x18, 2, 16);
        w(&mut c, 0x20, 4, 0x1000);
        w(&mut c, 0x24, 4, 0x2);
        w(&mut c, 0x28, 8, 0x3000);
        w(&mut c, 0x30, 4, 0x4000);
        w(&mut c, 0x1c, 2, 1);
        w(&mut c, 0x18, 2, 32);
        w(&mut c, 0x20, 4, 0);
        assert_eq!(
            c.queues[1],
            QueueRegs {
                max_size: 64,
                size: 16,
                enabled: true,
                desc: 0x2_0000_1000,
                avail: 0x3000,
                used: 0x4000,
                msix_vector: NO_VECTOR,
            }
        );
        assert_eq!(r(&c, 0x24, 4), 2);
        // A selector past the last queue reads size 0 and ignores writes.
        w(&mut c, 0x16, 2, 9);
        assert_eq!(r(&c, 0x18, 2), 0);
        assert_eq!(w(&mut c, 0x18, 2, 8), CommonWrite::Done);
        assert_eq!(w(&mut c, 0x14, 1, 3), CommonWrite::Status(3));
        c.reset();
        assert_eq!(c.queues[1].size, 64);
        assert!(!c.queues[1].enabled);
    }
}
