//! The ACPI power-management timer (`PM_TMR`): a free-running 24-bit counter at 3.579545 MHz,
//! read through a 32-bit I/O register whose top byte reads 0. Firmware (OVMF's `AcpiTimerLib`,
//! SeaBIOS) and operating systems time delays with it.
//!
//! The count is computed from the host's monotonic clock on each read, so the timer costs
//! nothing between reads and never drifts from the host's time. A snapshot records the count
//! ([`PmTimer::ticks`]); a restored timer carries on from it ([`PmTimer::resume_from`]), so
//! the guest never sees it go back.

use std::time::Instant;

/// The timer's frequency (the ACPI-defined 14.31818 MHz / 4).
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// The counter's width: 24 bits (the FADT's `TMR_VAL_EXT` flag is clear).
pub const PM_TIMER_MASK: u32 = 0x00ff_ffff;

/// A PM timer.
#[derive(Clone, Debug)]
pub struct PmTimer {
    /// When the count was `offset`.
    start: Instant,
    /// The count at `start`.
    offset: u64,
}

impl Default for PmTimer {
    fn default() -> Self {
        PmTimer::new()
    }
}

impl PmTimer {
    /// A timer counting from 0 now.
    pub fn new() -> PmTimer {
        PmTimer {
            start: Instant::now(),
            offset: 0,
        }
    }

    /// Ticks counted so far, not truncated to the register's 24 bits.
    pub fn ticks(&self) -> u64 {
        self.ticks_at(Instant::now())
    }

    fn ticks_at(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.start).as_nanos();
        let elapsed = ns * u128::from(PM_TIMER_HZ) / 1_000_000_000;
        self.offset.wrapping_add(elapsed as u64)
    }

    /// The register's value: the count's low 24 bits.
    pub fn read(&self) -> u32 {
        self.ticks() as u32 & PM_TIMER_MASK
    }

    /// Counts on from `ticks` (what [`PmTimer::ticks`] returned when the snapshot was taken).
    pub fn resume_from(&mut self, ticks: u64) {
        self.start = Instant::now();
        self.offset = ticks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// CLOCK_MONOTONIC_RAW in nanoseconds: a host clock other than the one the timer uses.
    fn raw_ns() -> u128 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
        assert_eq!(rc, 0);
        ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
    }

    #[test]
    fn counts_at_3_579545_mhz_against_the_host_clock() {
        let t = PmTimer::new();
        // Each read is bracketed by host clock reads, so preemption widens the bounds
        // instead of skewing the measured rate.
        let (a0, a, a1) = (raw_ns(), t.ticks(), raw_ns());
        std::thread::sleep(Duration::from_millis(300));
        let (b0, b, b1) = (raw_ns(), t.ticks(), raw_ns());
        let ticks = (b - a) as f64;
        let hz = PM_TIMER_HZ as f64;
        let (shortest, longest) = ((b0 - a1) as f64 / 1e9, (b1 - a0) as f64 / 1e9);
        assert!(
            ticks >= hz * shortest * 0.995 && ticks <= hz * longest * 1.005,
            "{ticks} ticks in {shortest:.6}-{longest:.6} s"
        );
    }

    #[test]
    fn reads_never_go_back_modulo_24_bits() {
        let t = PmTimer::new();
        let mut last = t.read();
        let mut advanced = 0u64;
        for _ in 0..100_000 {
            let v = t.read();
            assert_eq!(v & !PM_TIMER_MASK, 0, "the top byte reads 0");
            // Forward distance in the 24-bit ring: a step back would look like ~2^24.
            let step = v.wrapping_sub(last) & PM_TIMER_MASK;
            assert!(step < 1 << 20, "{last:#x} -> {v:#x}");
            advanced += u64::from(step);
            last = v;
        }
        assert!(advanced > 0, "the timer did not advance");
    }

    #[test]
    fn wraps_at_24_bits_and_resumes_from_a_snapshot() {
        let mut t = PmTimer::new();
        t.resume_from(u64::from(PM_TIMER_MASK) - 10);
        let before = t.ticks();
        std::thread::sleep(Duration::from_millis(5));
        // 5 ms is ~17,900 ticks: the register passed 0xFFFFFF and starts again low.
        assert!(t.read() < 1 << 16, "read {:#x}", t.read());
        assert!(t.ticks() > before);
        let saved = t.ticks();
        let mut restored = PmTimer::new();
        restored.resume_from(saved);
        assert!(restored.ticks() >= saved);
        assert!(
            restored.ticks() < saved + PM_TIMER_HZ,
            "within a second of the saved count"
        );
    }
}
