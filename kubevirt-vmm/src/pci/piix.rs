//! The PIIX functions of QEMU's i440FX machine at slot 1, as firmware looks for them: the
//! PIIX3 PCI-to-ISA bridge (00:01.0, 8086:7000, which makes slot 1 multi-function) and the
//! PIIX4 power-management function (00:01.3, 8086:7113) with the ACPI PM timer.
//!
//! OVMF picks its timer by the host bridge (i440FX 8086:1237 at 00:00.0), then uses PIIX4's
//! `PMBA` (config 0x40, bits 15:6 the I/O base, bit 0 reads 1) and `PMREGMISC` (config 0x80,
//! bit 0 `PMIOSE` enables the I/O block) and reads the timer at `PMBA + 8`. SeaBIOS does the
//! same when it finds the ISA bridge. As in QEMU, the 64-byte block decodes wherever the guest
//! puts it while `PMIOSE` is set, whatever the command register says (the VMM routes the
//! ports no fixed device claims to it, [`super::PciIoWindow`]); unlike QEMU's reset state, the
//! VMM presets `PMBA` to [`PM_BASE`] with `PMIOSE` on, as firmware would, so that the FADT's
//! `PM_TMR_BLK` is right from the first instruction (firmware writes the same value again, and
//! OVMF keeps an enabled block where it is).
//!
//! The block: `PM1_STS` (+0, write 1 to clear), `PM1_EN` (+2), `PM1_CNT` (+4, `SLP_EN` reads
//! 0; the VMM's FADT is hardware-reduced and does not advertise these three, the sleep and
//! reset registers are `acpi::power`'s), `PM_TMR` (+8, read-only). No SCI is raised. Config
//! byte 0x5B has `APMC_EN` set, QEMU's way of telling SeaBIOS that SMM is set up already (KVM
//! guests here have no SMM). The SMBus registers read 0, so no SMBus driver binds.

use super::config::{PciConfiguration, PciIds};
use super::device::PciDevice;
use crate::acpi::pm_timer::PmTimer;
use crate::bus::DeviceStateError;
use crate::snapshot::codec::{Decoder, Encoder, field};

/// Slot of the PIIX functions.
pub const PIIX_SLOT: u8 = 1;
/// Function number of the PIIX4 PM function.
pub const PIIX4_PM_FUNCTION: u8 = 3;
/// The PM I/O base the VMM presets and advertises (SeaBIOS's and OVMF's choice for PIIX4).
pub const PM_BASE: u16 = 0xb000;
/// Bytes the PM I/O block spans.
pub const PM_IO_SPAN: u64 = 64;
/// Offset of `PM_TMR` in the block.
pub const PM_TIMER_OFFSET: u16 = 8;

const PMBA_REG: usize = 0x40 / 4;
const PMBA_WRITABLE: u32 = 0x0000_ffc0;
const PMBA_RTE: u32 = 1;
const PMREGMISC_REG: usize = 0x80 / 4;
const PMIOSE: u32 = 1;
const DEVACTB_REG: usize = 0x58 / 4;
const APMC_EN: u32 = 1 << 25;
/// `SLP_EN` in `PM1_CNT`: write-only.
const SLP_EN: u16 = 1 << 13;

/// The PIIX3 PCI-to-ISA bridge: only its identity (function 0 of the multi-function slot);
/// its routing registers (PIRQ at 0x60-0x63) are plain storage.
#[derive(Debug)]
pub struct Piix3Isa {
    config: PciConfiguration,
}

impl Piix3Isa {
    /// The bridge, header type 0x80 (multi-function).
    pub fn new() -> Piix3Isa {
        let mut config = PciConfiguration::new(PciIds {
            vendor: 0x8086,
            device: 0x7000,
            revision: 0,
            class: 0x06_01_00,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        });
        config.init_reg(3, 0x0080_0000, 0x0000_ffff);
        // PIRQ route control A-D: the firmware writes its IRQ choices here.
        config.init_reg(0x60 / 4, 0x8080_8080, 0xffff_ffff);
        Piix3Isa { config }
    }
}

impl Default for Piix3Isa {
    fn default() -> Self {
        Piix3Isa::new()
    }
}

impl PciDevice for Piix3Isa {
    fn config(&self) -> &PciConfiguration {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }
    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
    fn save_state(&mut self) -> Result<Vec<u8>, DeviceStateError> {
        Ok(super::device::save_config_only(&self.config))
    }
    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        super::device::restore_config_only(&mut self.config, state)
    }
}

/// The PIIX4 power-management function with its I/O block and PM timer.
#[derive(Debug)]
pub struct Piix4Pm {
    config: PciConfiguration,
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u16,
    timer: PmTimer,
}

impl Piix4Pm {
    /// The function with `PMBA` = [`PM_BASE`] and the block enabled.
    pub fn new() -> Piix4Pm {
        let mut config = PciConfiguration::new(PciIds {
            vendor: 0x8086,
            device: 0x7113,
            revision: 3,
            class: 0x06_80_00,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        });
        config.init_reg(PMBA_REG, u32::from(PM_BASE) | PMBA_RTE, PMBA_WRITABLE);
        config.init_reg(PMREGMISC_REG, PMIOSE, PMIOSE);
        config.init_reg(DEVACTB_REG, APMC_EN, 0);
        Piix4Pm {
            config,
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: 0,
            timer: PmTimer::new(),
        }
    }

    /// Where the I/O block decodes now, if it is enabled.
    pub fn io_base(&self) -> Option<u64> {
        (self.config.read_reg(PMREGMISC_REG) & PMIOSE != 0)
            .then(|| u64::from(self.config.read_reg(PMBA_REG) & PMBA_WRITABLE))
    }

    /// The offset of `port` in the block, if the block is enabled and covers it.
    fn decode(&self, port: u64) -> Option<u64> {
        let base = self.io_base()?;
        (port >= base && port - base < PM_IO_SPAN).then(|| port - base)
    }

    /// The bytes of the registers at offsets 0-11.
    fn block(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..2].copy_from_slice(&self.pm1_sts.to_le_bytes());
        b[2..4].copy_from_slice(&self.pm1_en.to_le_bytes());
        b[4..6].copy_from_slice(&(self.pm1_cnt & !SLP_EN).to_le_bytes());
        b[8..12].copy_from_slice(&self.timer.read().to_le_bytes());
        b
    }

    fn read_block(&self, offset: u64, data: &mut [u8]) {
        let b = self.block();
        for (i, d) in data.iter_mut().enumerate() {
            *d = usize::try_from(offset)
                .ok()
                .and_then(|o| b.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_block(&mut self, offset: u64, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let Some(at) = offset.checked_add(i as u64) else {
                return;
            };
            let shift = (at % 2) * 8;
            let v = u16::from(v) << shift;
            let byte = 0xffu16 << shift;
            match at {
                0 | 1 => self.pm1_sts &= !v,
                2 | 3 => self.pm1_en = (self.pm1_en & !byte) | v,
                4 | 5 => self.pm1_cnt = (self.pm1_cnt & !byte) | (v & !SLP_EN),
                _ => {}
            }
        }
    }
}

impl Default for Piix4Pm {
    fn default() -> Self {
        Piix4Pm::new()
    }
}

impl PciDevice for Piix4Pm {
    fn config(&self) -> &PciConfiguration {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfiguration {
        &mut self.config
    }
    fn read_bar(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write_bar(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}

    fn read_io(&mut self, port: u64, data: &mut [u8]) -> bool {
        match self.decode(port) {
            Some(offset) => {
                self.read_block(offset, data);
                true
            }
            None => false,
        }
    }

    fn write_io(&mut self, port: u64, data: &[u8]) -> bool {
        match self.decode(port) {
            Some(offset) => {
                self.write_block(offset, data);
                true
            }
            None => false,
        }
    }

    fn save_state(&mut self) -> Result<Vec<u8>, DeviceStateError> {
        let mut e = Encoder::new();
        self.config.save(&mut e);
        e.u32(u32::from(self.pm1_sts) | u32::from(self.pm1_en) << 16);
        e.u32(u32::from(self.pm1_cnt));
        e.u64(self.timer.ticks());
        Ok(e.finish())
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        let invalid = |e: crate::snapshot::CodecError| DeviceStateError::Invalid(e.to_string());
        let mut d = Decoder::new(state);
        self.config.restore(&mut d).map_err(invalid)?;
        let evt = d.u32(&field("PM1 status and enable")).map_err(invalid)?;
        let cnt = d.u32(&field("PM1 control")).map_err(invalid)?;
        let ticks = d.u64(&field("PM timer count")).map_err(invalid)?;
        d.finish().map_err(invalid)?;
        self.pm1_sts = evt as u16;
        self.pm1_en = (evt >> 16) as u16;
        self.pm1_cnt = cnt as u16;
        self.timer.resume_from(ticks);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::pm_timer::{PM_TIMER_HZ, PM_TIMER_MASK};
    use std::time::Duration;

    fn cfg_write32(dev: &mut Piix4Pm, offset: usize, v: u32) {
        dev.write_config_register(offset / 4, 0, &v.to_le_bytes());
    }

    fn timer_at(dev: &mut Piix4Pm, port: u64) -> Option<u32> {
        let mut d = [0u8; 4];
        dev.read_io(port, &mut d).then(|| u32::from_le_bytes(d))
    }

    #[test]
    fn pmba_keeps_rte_and_64_byte_alignment_and_pmiose_gates_the_block() {
        let mut dev = Piix4Pm::new();
        assert_eq!(dev.read_config_register(0), 0x7113_8086);
        assert_eq!(dev.io_base(), Some(u64::from(PM_BASE)));
        assert!(timer_at(&mut dev, u64::from(PM_BASE) + 8).is_some());
        // Low bits are not writable and bit 0 stays 1; 0xffff_ffff sizes to 0xffc1.
        cfg_write32(&mut dev, 0x40, 0xffff_ffff);
        assert_eq!(dev.read_config_register(0x40 / 4), 0xffc1);
        cfg_write32(&mut dev, 0x40, 0xc03f);
        assert_eq!(dev.read_config_register(0x40 / 4), 0xc001);
        assert_eq!(dev.io_base(), Some(0xc000));
        assert!(timer_at(&mut dev, u64::from(PM_BASE) + 8).is_none(), "old base");
        assert!(timer_at(&mut dev, 0xc008).is_some(), "new base");
        assert!(timer_at(&mut dev, 0xc040).is_none(), "past the 64 bytes");
        // PMIOSE off: nothing decodes; only bit 0 of PMREGMISC is writable.
        dev.write_config_register(0x80 / 4, 0, &[0xfe]);
        assert_eq!(dev.read_config_register(0x80 / 4), 0);
        assert!(timer_at(&mut dev, 0xc008).is_none());
        dev.write_config_register(0x80 / 4, 0, &[1]);
        assert!(timer_at(&mut dev, 0xc008).is_some());
        // SMM is "already set up" for SeaBIOS, and that byte is read-only.
        cfg_write32(&mut dev, 0x58, 0);
        assert_eq!(dev.read_config_register(0x58 / 4), APMC_EN);
    }

    #[test]
    fn pm1_registers_status_clears_by_writing_ones_and_slp_en_reads_zero() {
        let mut dev = Piix4Pm::new();
        let base = u64::from(PM_BASE);
        dev.pm1_sts = 0x8101;
        assert!(dev.write_io(base, &0x0001u16.to_le_bytes()));
        dev.write_io(base + 2, &0x0120u16.to_le_bytes());
        dev.write_io(base + 4, &(SLP_EN | 5 << 10 | 1).to_le_bytes());
        let mut d = [0u8; 6];
        dev.read_io(base, &mut d);
        assert_eq!(d, [0x00, 0x81, 0x20, 0x01, 0x01, 0x14]);
        // Byte access to the control register's high byte.
        dev.write_io(base + 5, &[0x00]);
        let mut c = [0u8; 2];
        dev.read_io(base + 4, &mut c);
        assert_eq!(u16::from_le_bytes(c), 1);
        // The timer is read-only: writes do not move it back.
        dev.write_io(base + 8, &[0, 0, 0, 0]);
        let mut t = [0u8; 1];
        dev.read_io(base + 11, &mut t);
        assert_eq!(t, [0], "the top byte of PM_TMR is 0");
    }

    #[test]
    fn the_timer_at_pmba_plus_8_runs_at_the_acpi_rate() {
        let mut dev = Piix4Pm::new();
        let port = u64::from(PM_BASE) + u64::from(PM_TIMER_OFFSET);
        let before_a = std::time::Instant::now();
        let a = timer_at(&mut dev, port).unwrap();
        let after_a = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(200));
        let before_b = std::time::Instant::now();
        let b = timer_at(&mut dev, port).unwrap();
        let after_b = std::time::Instant::now();
        let ticks = f64::from(b.wrapping_sub(a) & PM_TIMER_MASK);
        let hz = PM_TIMER_HZ as f64;
        let shortest = (before_b - after_a).as_secs_f64();
        let longest = (after_b - before_a).as_secs_f64();
        assert!(
            ticks >= hz * shortest * 0.995 && ticks <= hz * longest * 1.005,
            "{ticks} ticks in {shortest:.6}-{longest:.6} s"
        );
    }

    #[test]
    fn save_and_restore_keep_the_base_the_registers_and_the_count() {
        let mut dev = Piix4Pm::new();
        cfg_write32(&mut dev, 0x40, 0xa040);
        dev.write_io(0xa042, &0x0100u16.to_le_bytes());
        dev.timer.resume_from(0x12_3456_789a);
        let saved_ticks = dev.timer.ticks();
        let state = dev.save_state().unwrap();
        let mut back = Piix4Pm::new();
        back.restore_state(&state).unwrap();
        assert_eq!(back.io_base(), Some(0xa040));
        assert!(timer_at(&mut back, u64::from(PM_BASE) + 8).is_none());
        let mut en = [0u8; 2];
        assert!(back.read_io(0xa042, &mut en));
        assert_eq!(u16::from_le_bytes(en), 0x0100);
        let t = back.timer.ticks();
        assert!(t >= saved_ticks && t < saved_ticks + PM_TIMER_HZ, "count {t:#x}");
        assert!(back.restore_state(&state[..state.len() - 1]).is_err());
    }
}
