//! SMBIOS structures (DMTF DSP0134 3.x) as bytes: a formatted area followed by its string set.

/// BIOS Information.
pub const TYPE_BIOS: u8 = 0;
/// System Information.
pub const TYPE_SYSTEM: u8 = 1;
/// System Enclosure or Chassis.
pub const TYPE_CHASSIS: u8 = 3;
/// Processor Information.
pub const TYPE_PROCESSOR: u8 = 4;
/// End-of-Table.
pub const TYPE_END: u8 = 127;

/// One structure being built: the formatted area (header included) and its strings.
#[derive(Debug)]
pub struct Structure {
    formatted: Vec<u8>,
    strings: Vec<Vec<u8>>,
}

impl Structure {
    /// A structure of `kind` with handle `handle`; the length byte is set by [`Structure::finish`].
    pub fn new(kind: u8, handle: u16) -> Self {
        let mut formatted = vec![kind, 0];
        formatted.extend_from_slice(&handle.to_le_bytes());
        Structure {
            formatted,
            strings: Vec::new(),
        }
    }

    /// Appends a byte field.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.formatted.push(v);
        self
    }

    /// Appends a WORD field.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a DWORD field.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a QWORD field.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.formatted.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes (e.g. the UUID).
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.formatted.extend_from_slice(v);
        self
    }

    /// Appends a string-number field for `s`: 0 ("no string") when `s` is empty, else the
    /// 1-based number of `s` in the string set. `s` must hold no NUL (checked by the caller).
    pub fn string(&mut self, s: &str) -> &mut Self {
        if s.is_empty() {
            return self.u8(0);
        }
        self.strings.push(s.as_bytes().to_vec());
        let n = self.strings.len() as u8;
        self.u8(n)
    }

    /// The structure's bytes: formatted area with its length, each string NUL-terminated,
    /// and the set's terminating NUL (two NULs when there are no strings).
    pub fn finish(mut self) -> Vec<u8> {
        self.formatted[1] = self.formatted.len() as u8;
        let mut out = self.formatted;
        if self.strings.is_empty() {
            out.push(0);
        }
        for s in self.strings {
            out.extend_from_slice(&s);
            out.push(0);
        }
        out.push(0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_numbered_and_the_set_ends_with_two_nuls() {
        let mut s = Structure::new(1, 0x100);
        s.string("a").string("").string("bc").u16(7);
        assert_eq!(
            s.finish(),
            vec![1, 9, 0, 1, 1, 0, 2, 7, 0, b'a', 0, b'b', b'c', 0, 0]
        );
        assert_eq!(
            Structure::new(127, 0x7f00).finish(),
            vec![127, 4, 0, 0x7f, 0, 0]
        );
    }
}
