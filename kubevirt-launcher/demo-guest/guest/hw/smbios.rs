//! The SMBIOS system information (type 1): where KubeVirt's `firmware.uuid` and `serial` show
//! up in a guest (Linux: /sys/class/dmi/id/product_uuid, product_serial). Found as an OS finds
//! it: the `_SM3_` (or `_SM_`) anchor on a 16-byte boundary in 0xF0000–0xFFFFF.

use super::mmio::{r8, r16, r32, r64};

const SYSTEM_INFORMATION: u8 = 1;
const END_OF_TABLE: u8 = 127;
/// Walk at most this many structures (a corrupt table must not loop forever).
const MAX_STRUCTURES: usize = 256;

/// What type 1 says.
pub struct SystemInfo {
    /// Structure address (strings follow it).
    at: u64,
    /// The UUID as the guest's OS prints it.
    pub uuid: [u8; 16],
}

fn table() -> Option<(u64, u64)> {
    (0xf_0000..0x10_0000u64).step_by(16).find_map(|a| {
        if r32(a) == u32::from_le_bytes(*b"_SM3") && r8(a + 4) == b'_' {
            Some((r64(a + 0x10), u64::from(r32(a + 0x0c))))
        } else if r32(a) == u32::from_le_bytes(*b"_SM_") {
            Some((u64::from(r32(a + 0x18)), u64::from(r16(a + 0x16))))
        } else {
            None
        }
    })
}

impl SystemInfo {
    /// The type 1 structure, if the firmware has SMBIOS.
    pub fn find() -> Option<SystemInfo> {
        let (start, len) = table()?;
        let end = start + len.min(64 * 1024);
        let mut at = start;
        for _ in 0..MAX_STRUCTURES {
            if at + 4 > end {
                return None;
            }
            let (kind, size) = (r8(at), u64::from(r8(at + 1)));
            if kind == END_OF_TABLE || size < 4 {
                return None;
            }
            if kind == SYSTEM_INFORMATION && size >= 0x18 {
                let mut raw = [0u8; 16];
                for (i, b) in raw.iter_mut().enumerate() {
                    *b = r8(at + 8 + i as u64);
                }
                // SMBIOS 2.6+: the first three fields are little-endian.
                let mut uuid = raw;
                uuid[..4].reverse();
                uuid[4..6].reverse();
                uuid[6..8].reverse();
                return Some(SystemInfo { at, uuid });
            }
            // Skip the formatted area and the string set (ends with two NULs).
            let mut p = at + size;
            while p + 1 < end && (r8(p) != 0 || r8(p + 1) != 0) {
                p += 1;
            }
            at = p + 2;
        }
        None
    }

    /// String number `n` (1-based) of the structure, copied into `out`; its length.
    fn string(&self, n: u8, out: &mut [u8]) -> usize {
        if n == 0 {
            return 0;
        }
        let mut p = self.at + u64::from(r8(self.at + 1));
        for _ in 1..n {
            while r8(p) != 0 {
                p += 1;
            }
            p += 1;
            if r8(p) == 0 {
                return 0;
            }
        }
        let mut len = 0;
        while len < out.len() && r8(p + len as u64) != 0 {
            out[len] = r8(p + len as u64);
            len += 1;
        }
        len
    }

    /// The system serial number into `out`; its length.
    pub fn serial(&self, out: &mut [u8]) -> usize {
        self.string(r8(self.at + 7), out)
    }

    /// The manufacturer into `out`; its length.
    pub fn manufacturer(&self, out: &mut [u8]) -> usize {
        self.string(r8(self.at + 4), out)
    }
}
