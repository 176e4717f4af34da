//! The byte encoding inside a snapshot's state file: little-endian integers, length-prefixed
//! byte strings, and KVM state structs as their kernel ABI bytes.
//!
//! Decoding is bounds-checked at every step and names the field it was reading, so a damaged
//! file gives "truncated while reading vCPU 1 xsave" rather than a panic or garbage state.

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Longest byte string a decoder accepts (a device state, a name): far above any real one, low
/// enough that a corrupt length cannot ask for gigabytes.
pub const MAX_BLOB_LEN: usize = 16 << 20;

/// Errors decoding a snapshot's payload. Each names the field being read.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The payload ended inside a field.
    #[error("the snapshot state is truncated: reading {what} needs {needed} bytes, {left} left")]
    Truncated {
        /// The field.
        what: String,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the payload.
        left: usize,
    },
    /// A length or count is larger than anything this VMM writes.
    #[error("the snapshot state is corrupt: {what} claims {len} entries/bytes (at most {max})")]
    TooLong {
        /// The field.
        what: String,
        /// The length read.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A name is not UTF-8.
    #[error("the snapshot state is corrupt: {what} is not UTF-8")]
    Utf8 {
        /// The field.
        what: String,
    },
    /// A tag byte has a value no version of this format uses.
    #[error("the snapshot state is corrupt: {what} has the invalid tag {tag}")]
    BadTag {
        /// The field.
        what: String,
        /// The tag read.
        tag: u8,
    },
    /// Two fields disagree.
    #[error("the snapshot state is corrupt: {0}")]
    Inconsistent(String),
    /// Bytes are left after the last field.
    #[error("the snapshot state is corrupt: {0} bytes follow its last field")]
    Trailing(usize),
}

/// Appends fields to a byte buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty buffer.
    pub fn new() -> Self {
        Encoder::default()
    }

    /// A byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A count or length (as u32; callers keep them far below 4 GiB).
    pub fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.buf.extend_from_slice(v);
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    /// A KVM state struct, as its kernel ABI bytes (fixed size: no prefix).
    pub fn pod<T: IntoBytes + Immutable>(&mut self, v: &T) {
        self.buf.extend_from_slice(v.as_bytes());
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields back, in the order they were written.
#[derive(Debug)]
pub struct Decoder<'a> {
    data: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data }
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8], CodecError> {
        if n > self.data.len() {
            return Err(CodecError::Truncated {
                what: what(),
                needed: n,
                left: self.data.len(),
            });
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    /// A little-endian u32.
    pub fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u64.
    pub fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of at most `max` entries.
    pub fn len(&mut self, max: usize, what: &dyn Fn() -> String) -> Result<usize, CodecError> {
        let n = self.u32(what)?;
        match usize::try_from(n) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(CodecError::TooLong {
                what: what(),
                len: u64::from(n),
                max,
            }),
        }
    }

    /// A length-prefixed byte string.
    pub fn bytes(&mut self, what: &dyn Fn() -> String) -> Result<&'a [u8], CodecError> {
        let n = self.len(MAX_BLOB_LEN, what)?;
        self.take(n, what)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, what: &dyn Fn() -> String) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| CodecError::Utf8 { what: what() })
    }

    /// A KVM state struct from its kernel ABI bytes.
    pub fn pod<T: FromBytes>(&mut self, what: &dyn Fn() -> String) -> Result<T, CodecError> {
        let bytes = self.take(std::mem::size_of::<T>(), what)?;
        // The length is exactly size_of::<T>, so reading cannot fail.
        T::read_from_bytes(bytes).map_err(|_| CodecError::Truncated {
            what: what(),
            needed: std::mem::size_of::<T>(),
            left: bytes.len(),
        })
    }

    /// Checks that every byte was read.
    pub fn finish(self) -> Result<(), CodecError> {
        match self.data.len() {
            0 => Ok(()),
            n => Err(CodecError::Trailing(n)),
        }
    }
}

/// A field name for a [`Decoder`] call.
pub fn field(name: &'static str) -> impl Fn() -> String {
    move || name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_regs;
    use proptest::prelude::*;

    #[test]
    fn fields_round_trip() {
        let mut e = Encoder::new();
        e.u8(7);
        e.u32(0xdead_beef);
        e.u64(u64::MAX - 1);
        e.str("serial");
        let regs = kvm_regs {
            rip: 0x1234,
            rcx: 99,
            ..Default::default()
        };
        e.pod(&regs);
        let buf = e.finish();
        let mut d = Decoder::new(&buf);
        assert_eq!(d.u8(&field("a")).unwrap(), 7);
        assert_eq!(d.u32(&field("b")).unwrap(), 0xdead_beef);
        assert_eq!(d.u64(&field("c")).unwrap(), u64::MAX - 1);
        assert_eq!(d.str(&field("d")).unwrap(), "serial");
        let back: kvm_regs = d.pod(&field("regs")).unwrap();
        assert_eq!((back.rip, back.rcx), (0x1234, 99));
        d.finish().unwrap();
    }

    #[test]
    fn truncation_names_the_field() {
        let mut e = Encoder::new();
        e.pod(&kvm_regs::default());
        let buf = e.finish();
        let mut d = Decoder::new(&buf[..buf.len() - 1]);
        let err = d.pod::<kvm_regs>(&field("vCPU 0 regs")).unwrap_err();
        assert!(err.to_string().contains("vCPU 0 regs"), "{err}");
        assert!(matches!(err, CodecError::Truncated { .. }));
    }

    #[test]
    fn huge_lengths_are_refused_before_allocating() {
        let buf = u32::MAX.to_le_bytes();
        let err = Decoder::new(&buf)
            .bytes(&field("device state"))
            .unwrap_err();
        assert!(matches!(err, CodecError::TooLong { .. }), "{err}");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let d = Decoder::new(&[1, 2, 3]);
        assert_eq!(d.finish(), Err(CodecError::Trailing(3)));
    }

    proptest! {
        /// Whatever the bytes, reading a sequence of fields either succeeds or names an error;
        /// it never panics.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = Decoder::new(&data);
            let _ = d.u8(&field("a"))
                .and_then(|_| d.str(&field("b")))
                .and_then(|_| d.pod::<kvm_regs>(&field("c")).map(|_| ""))
                .and_then(|_| d.bytes(&field("d")).map(|_| ""));
        }
    }
}
