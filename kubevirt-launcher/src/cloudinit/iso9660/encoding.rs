//! Field encodings shared by every ISO 9660 structure: both-endian integers (ECMA-119 7.2.3 and
//! 7.3.3), the two date formats (8.4.26.1 and 9.1.5), padded text fields and the UCS-2 big-endian
//! strings of the Joliet extension.

/// Writes `value` as a 16-bit both-endian field: little-endian first, then big-endian (4 bytes).
pub fn both_u16(out: &mut [u8], value: u16) {
    out[..2].copy_from_slice(&value.to_le_bytes());
    out[2..4].copy_from_slice(&value.to_be_bytes());
}

/// Writes `value` as a 32-bit both-endian field: little-endian first, then big-endian (8 bytes).
pub fn both_u32(out: &mut [u8], value: u32) {
    out[..4].copy_from_slice(&value.to_le_bytes());
    out[4..8].copy_from_slice(&value.to_be_bytes());
}

/// A moment in UTC, written into every date field of the image.
///
/// The writer never reads the clock: the caller chooses, so the same input always gives the same
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    /// Year, 1900..=2155 (the directory record stores it as an offset from 1900 in one byte).
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of the month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=59.
    pub second: u8,
}

impl Timestamp {
    /// 2000-01-01 00:00:00 UTC, the default when nothing better is known.
    pub const Y2K: Timestamp = Timestamp {
        year: 2000,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
    };

    /// Whether every field is within the range the two date formats can hold.
    pub fn is_valid(&self) -> bool {
        (1900..=2155).contains(&self.year)
            && (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
    }

    /// The 7-byte form of a directory record (ECMA-119 9.1.5): years since 1900, month, day,
    /// hour, minute, second, offset from GMT in 15-minute units (always 0, UTC).
    ///
    /// The caller has checked [`Timestamp::is_valid`], so the year offset fits in a byte.
    pub fn record_bytes(&self) -> [u8; 7] {
        let years = u8::try_from(self.year.saturating_sub(1900)).unwrap_or(u8::MAX);
        [
            years,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            0,
        ]
    }

    /// The 17-byte form of a volume descriptor (ECMA-119 8.4.26.1): `YYYYMMDDHHMMSScc` as ASCII
    /// digits, then the offset from GMT (0).
    pub fn descriptor_bytes(&self) -> [u8; 17] {
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        let mut out = [0u8; 17];
        out[..16].copy_from_slice(&text.as_bytes()[..16]);
        out
    }
}

/// The "not specified" date of a volume descriptor: sixteen ASCII zeros and a zero offset.
pub const UNSPECIFIED_DATE: [u8; 17] = *b"0000000000000000\0";

/// Fills `out` with `text` as ASCII, padded with spaces (the a- and d-character fields of the
/// primary volume descriptor). Text longer than the field is cut.
pub fn ascii_field(out: &mut [u8], text: &str) {
    out.fill(b' ');
    for (slot, byte) in out.iter_mut().zip(text.bytes()) {
        *slot = byte;
    }
}

/// Fills `out` with `text` as UCS-2 big-endian, padded with UCS-2 spaces (the text fields of
/// the Joliet supplementary volume descriptor). An odd trailing byte is left zero.
pub fn ucs2_field(out: &mut [u8], text: &str) {
    out.fill(0);
    let mut units = ucs2(text).into_iter().chain(std::iter::repeat(0x0020));
    for pair in out.chunks_exact_mut(2) {
        let unit = units.next().unwrap_or(0x0020);
        pair.copy_from_slice(&unit.to_be_bytes());
    }
}

/// `text` as UCS-2 code units. Characters outside the Basic Multilingual Plane have no UCS-2
/// form; callers reject them first (see [`is_ucs2`]).
pub fn ucs2(text: &str) -> Vec<u16> {
    text.encode_utf16().collect()
}

/// `text` as UCS-2 big-endian bytes, the Joliet file identifier encoding.
pub fn ucs2_be(text: &str) -> Vec<u8> {
    ucs2(text).into_iter().flat_map(u16::to_be_bytes).collect()
}

/// Whether every character of `text` is in the Basic Multilingual Plane.
pub fn is_ucs2(text: &str) -> bool {
    text.chars().all(|c| (c as u32) < 0x1_0000)
}

/// Whether `byte` is a d-character (ECMA-119 7.4.1): `A-Z`, `0-9` or `_`.
pub fn is_d_char(byte: u8) -> bool {
    byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_'
}

/// `name` folded to d-characters for the primary (non-Joliet) tree: upper case, anything else
/// becomes `_`, cut to `max` bytes.
pub fn d_chars(name: &str, max: usize) -> String {
    name.chars()
        .map(|c| {
            let up = c.to_ascii_uppercase();
            if up.is_ascii() && is_d_char(up as u8) {
                up
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_endian_u32_is_le_then_be() {
        let mut out = [0u8; 8];
        both_u32(&mut out, 0x0102_0304);
        assert_eq!(out, [4, 3, 2, 1, 1, 2, 3, 4]);
    }

    #[test]
    fn both_endian_u16_is_le_then_be() {
        let mut out = [0u8; 4];
        both_u16(&mut out, 2048);
        assert_eq!(out, [0x00, 0x08, 0x08, 0x00]);
    }

    #[test]
    fn record_date_counts_years_from_1900() {
        let t = Timestamp {
            year: 2024,
            month: 5,
            day: 6,
            hour: 7,
            minute: 8,
            second: 9,
        };
        assert_eq!(t.record_bytes(), [124, 5, 6, 7, 8, 9, 0]);
        assert_eq!(&t.descriptor_bytes(), b"2024050607080900\0");
    }

    #[test]
    fn timestamp_range() {
        assert!(Timestamp::Y2K.is_valid());
        let mut t = Timestamp::Y2K;
        t.year = 2156;
        assert!(!t.is_valid());
        t = Timestamp::Y2K;
        t.month = 13;
        assert!(!t.is_valid());
    }

    #[test]
    fn ucs2_is_big_endian() {
        assert_eq!(ucs2_be("a-é"), vec![0x00, b'a', 0x00, b'-', 0x00, 0xe9]);
        assert!(is_ucs2("meta-data"));
        assert!(!is_ucs2("\u{1F600}"));
    }

    #[test]
    fn ucs2_field_pads_with_spaces() {
        let mut out = [0xffu8; 7];
        ucs2_field(&mut out, "ab");
        assert_eq!(out, [0, b'a', 0, b'b', 0, b' ', 0]);
    }

    #[test]
    fn ascii_field_pads_and_cuts() {
        let mut out = [0u8; 4];
        ascii_field(&mut out, "ab");
        assert_eq!(&out, b"ab  ");
        ascii_field(&mut out, "abcdef");
        assert_eq!(&out, b"abcd");
    }

    #[test]
    fn d_chars_fold_case_and_punctuation() {
        assert_eq!(d_chars("meta-data", 31), "META_DATA");
        assert_eq!(d_chars("network_data.json", 8), "NETWORK_");
        assert_eq!(d_chars("é", 8), "_");
    }
}
