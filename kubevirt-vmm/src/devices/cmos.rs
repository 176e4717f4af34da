//! The MC146818 CMOS RTC and NVRAM at ports 0x70 (index) / 0x71 (data).
//!
//! vm-superio has no x86 RTC, so this is ours. The clock reads host wall time through an
//! injected [`WallClock`]; guest writes to the time registers are kept in NVRAM but do not move
//! the clock (Linux writes the RTC only when NTP-synchronised, and the host clock is the truth).
//! The memory-size bytes firmware-era code reads (0x15-0x18, 0x30-0x31, 0x34-0x35, 0x5b-0x5d)
//! are filled from the VM's RAM layout.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::{BusDevice, DeviceStateError};

/// Index port (bit 7 of the value written masks NMIs).
pub const CMOS_INDEX_PORT: u16 = 0x70;
/// Span on the port bus: index and data port.
pub const CMOS_PORT_SPAN: u64 = 2;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY_OF_MONTH: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Status A: 32.768 kHz time base, 1024 Hz periodic rate; UIP (bit 7) never set.
const STATUS_A_DEFAULT: u8 = 0x26;
/// Status B bit 1: 24-hour mode.
const STATUS_B_24H: u8 = 1 << 1;
/// Status B bit 2: binary (not BCD) data mode.
const STATUS_B_BINARY: u8 = 1 << 2;
/// Status D bit 7: RAM and time valid (battery good).
const STATUS_D_VALID: u8 = 1 << 7;

/// Where the RTC gets the time.
pub trait WallClock: Send {
    /// Seconds since the Unix epoch, UTC.
    fn now_unix(&self) -> i64;
}

/// The host's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_unix(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// A calendar time, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    /// 0..=23
    pub hour: u8,
    /// 0..=59
    pub minute: u8,
    /// 0..=59
    pub second: u8,
    /// 1 = Sunday ..= 7 = Saturday, as the RTC counts.
    pub weekday: u8,
}

impl DateTime {
    /// The calendar time `secs` seconds after the Unix epoch (proleptic Gregorian calendar).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        // 1970-01-01 was a Thursday (RTC weekday 5).
        let weekday = ((days + 4).rem_euclid(7) + 1) as u8;
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
            weekday,
        }
    }
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// The CMOS RTC/NVRAM.
#[derive(Debug)]
pub struct Cmos<C> {
    index: u8,
    nvram: [u8; 128],
    clock: C,
}

impl<C: WallClock> Cmos<C> {
    /// A CMOS for a VM with `low_ram` bytes below the 32-bit hole and `high_ram` above 4 GiB.
    pub fn new(low_ram: u64, high_ram: u64, clock: C) -> Self {
        let mut nvram = [0u8; 128];
        nvram[usize::from(REG_STATUS_A)] = STATUS_A_DEFAULT;
        nvram[usize::from(REG_STATUS_B)] = STATUS_B_24H;
        nvram[usize::from(REG_STATUS_D)] = STATUS_D_VALID;
        // Base memory: 640 KiB.
        nvram[0x15..0x17].copy_from_slice(&640u16.to_le_bytes());
        // Extended memory between 1 MiB and 64 MiB, in KiB.
        let ext_kib = (low_ram.saturating_sub(1 << 20) / 1024).min(0xfc00) as u16;
        nvram[0x17..0x19].copy_from_slice(&ext_kib.to_le_bytes());
        nvram[0x30..0x32].copy_from_slice(&ext_kib.to_le_bytes());
        // Memory between 16 MiB and the hole, in 64 KiB units.
        let above_16m = (low_ram.saturating_sub(16 << 20) >> 16).min(0xffff) as u16;
        nvram[0x34..0x36].copy_from_slice(&above_16m.to_le_bytes());
        // Memory above 4 GiB, in 64 KiB units, 24 bits.
        let high = (high_ram >> 16).min(0xff_ffff) as u32;
        nvram[0x5b..0x5e].copy_from_slice(&high.to_le_bytes()[..3]);
        Cmos {
            index: 0,
            nvram,
            clock,
        }
    }

    fn encode(&self, value: u8) -> u8 {
        if self.nvram[usize::from(REG_STATUS_B)] & STATUS_B_BINARY != 0 {
            value
        } else {
            to_bcd(value)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.nvram[usize::from(REG_STATUS_B)] & STATUS_B_24H != 0 {
            return self.encode(hour);
        }
        let pm = if hour >= 12 { 0x80 } else { 0 };
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | pm
    }

    /// The register at `index` (0..=127) as the guest reads it.
    pub fn read_register(&mut self, index: u8) -> u8 {
        let index = index & 0x7f;
        let now = DateTime::from_unix(self.clock.now_unix());
        match index {
            REG_SECONDS => self.encode(now.second),
            REG_MINUTES => self.encode(now.minute),
            REG_HOURS => self.encode_hour(now.hour),
            REG_DAY_OF_WEEK => self.encode(now.weekday),
            REG_DAY_OF_MONTH => self.encode(now.day),
            REG_MONTH => self.encode(now.month),
            REG_YEAR => self.encode(now.year.rem_euclid(100) as u8),
            REG_CENTURY => self.encode(now.year.div_euclid(100).clamp(0, 99) as u8),
            REG_STATUS_C => 0,
            _ => self.nvram[usize::from(index)],
        }
    }

    /// A guest write to the register at `index`.
    pub fn write_register(&mut self, index: u8, value: u8) {
        match index & 0x7f {
            // Read-only: interrupt flags and the valid-RAM bit.
            REG_STATUS_C | REG_STATUS_D => {}
            // UIP is read-only.
            REG_STATUS_A => self.nvram[usize::from(REG_STATUS_A)] = value & 0x7f,
            i => self.nvram[usize::from(i)] = value,
        }
    }
}

impl<C: WallClock> BusDevice for Cmos<C> {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 => self.index,
            1 => self.read_register(self.index),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            // Bit 7 is the NMI mask, not part of the index.
            0 => self.index = value & 0x7f,
            1 => self.write_register(self.index, value),
            _ => {}
        }
    }

    fn snapshot_name(&self) -> &'static str {
        "cmos"
    }

    fn save_state(&mut self) -> Result<Option<Vec<u8>>, DeviceStateError> {
        let mut state = vec![self.index];
        state.extend_from_slice(&self.nvram);
        Ok(Some(state))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        let (&index, nvram) = state
            .split_first()
            .ok_or_else(|| DeviceStateError::Invalid("empty CMOS state".into()))?;
        if nvram.len() != self.nvram.len() || index > 0x7f {
            return Err(DeviceStateError::Invalid(format!(
                "CMOS state is {} bytes with index {index:#x}, expected {} with an index below 0x80",
                state.len(),
                self.nvram.len() + 1
            )));
        }
        self.index = index;
        self.nvram.copy_from_slice(nvram);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Fixed(i64);
    impl WallClock for Fixed {
        fn now_unix(&self) -> i64 {
            self.0
        }
    }

    // 2026-03-14 15:09:26 UTC, a Saturday.
    const PI_DAY: i64 = 1_773_500_966;

    fn read(cmos: &mut Cmos<Fixed>, index: u8) -> u8 {
        cmos.write(0x70, 0, &[index | 0x80]);
        let mut d = [0u8];
        cmos.read(0x70, 1, &mut d);
        d[0]
    }

    #[test]
    fn civil_dates() {
        let t = DateTime::from_unix(0);
        assert_eq!((t.year, t.month, t.day, t.weekday), (1970, 1, 1, 5));
        let t = DateTime::from_unix(PI_DAY);
        assert_eq!(
            (
                t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday
            ),
            (2026, 3, 14, 15, 9, 26, 7)
        );
        let t = DateTime::from_unix(951_782_400); // 2000-02-29
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
    }

    #[test]
    fn time_reads_in_bcd_by_default() {
        let mut cmos = Cmos::new(64 << 20, 0, Fixed(PI_DAY));
        assert_eq!(read(&mut cmos, REG_SECONDS), 0x26);
        assert_eq!(read(&mut cmos, REG_MINUTES), 0x09);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x15);
        assert_eq!(read(&mut cmos, REG_DAY_OF_MONTH), 0x14);
        assert_eq!(read(&mut cmos, REG_MONTH), 0x03);
        assert_eq!(read(&mut cmos, REG_YEAR), 0x26);
        assert_eq!(read(&mut cmos, REG_CENTURY), 0x20);
        assert_eq!(read(&mut cmos, REG_STATUS_D), STATUS_D_VALID);
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut cmos = Cmos::new(64 << 20, 0, Fixed(PI_DAY));
        cmos.write(0x70, 0, &[REG_STATUS_B]);
        cmos.write(0x70, 1, &[STATUS_B_BINARY]);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x80 | 3, "3 PM");
        assert_eq!(read(&mut cmos, REG_SECONDS), 26);
    }

    #[test]
    fn memory_size_registers() {
        let mut cmos = Cmos::new(3 << 30, 1 << 30, Fixed(0));
        let above_16m = u16::from_le_bytes([read(&mut cmos, 0x34), read(&mut cmos, 0x35)]);
        assert_eq!(u64::from(above_16m), ((3u64 << 30) - (16 << 20)) >> 16);
        let high = u32::from_le_bytes([
            read(&mut cmos, 0x5b),
            read(&mut cmos, 0x5c),
            read(&mut cmos, 0x5d),
            0,
        ]);
        assert_eq!(u64::from(high), (1u64 << 30) >> 16);
    }

    #[test]
    fn nvram_keeps_guest_writes() {
        let mut cmos = Cmos::new(64 << 20, 0, Fixed(0));
        cmos.write(0x70, 0, &[0x0f]);
        cmos.write(0x70, 1, &[0x0a]);
        assert_eq!(read(&mut cmos, 0x0f), 0x0a);
        cmos.write(0x70, 0, &[REG_STATUS_D]);
        cmos.write(0x70, 1, &[0]);
        assert_eq!(
            read(&mut cmos, REG_STATUS_D),
            STATUS_D_VALID,
            "status D is read-only"
        );
    }

    fn from_bcd(v: u8) -> u8 {
        (v >> 4) * 10 + (v & 0xf)
    }

    proptest! {
        /// Any sequence of guest accesses leaves the clock readable and in BCD range.
        #[test]
        fn guest_accesses_never_break_the_clock(
            now in 0i64..4_102_444_800,
            ops in proptest::collection::vec((0u64..3, any::<u8>(), any::<bool>()), 0..64),
        ) {
            let mut cmos = Cmos::new(64 << 20, 0, Fixed(now));
            for (offset, value, is_write) in ops {
                if is_write {
                    // Keep BCD mode so the assertions below apply.
                    if !(offset == 1 && cmos.index == REG_STATUS_B) {
                        cmos.write(0x70, offset, &[value]);
                    }
                } else {
                    let mut d = [0u8; 2];
                    cmos.read(0x70, offset, &mut d);
                }
            }
            let t = DateTime::from_unix(now);
            prop_assert_eq!(from_bcd(read(&mut cmos, REG_SECONDS)), t.second);
            prop_assert_eq!(from_bcd(read(&mut cmos, REG_MINUTES)), t.minute);
            prop_assert_eq!(from_bcd(read(&mut cmos, REG_MONTH)), t.month);
            let day = read(&mut cmos, REG_DAY_OF_MONTH);
            prop_assert!(day & 0xf <= 9 && (1..=31).contains(&from_bcd(day)));
        }

        #[test]
        fn civil_conversion_round_trips_days(days in -100_000i64..100_000) {
            let a = DateTime::from_unix(days * 86_400);
            let b = DateTime::from_unix(days * 86_400 + 86_399);
            prop_assert_eq!((a.year, a.month, a.day), (b.year, b.month, b.day));
            prop_assert_eq!((b.hour, b.minute, b.second), (23, 59, 59));
            let next = DateTime::from_unix((days + 1) * 86_400);
            prop_assert_eq!(next.weekday, a.weekday % 7 + 1);
        }
    }
}
