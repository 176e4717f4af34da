//! The state file's envelope: magic, format version, payload length and a CRC-32.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "KVRSSNAP"
//!      8     4  format version (little-endian)          -- FORMAT_VERSION
//!     12     4  reserved, 0
//!     16     8  payload length in bytes
//!     24     4  CRC-32 (IEEE) of bytes 8..24 and of the payload
//!     28     …  payload (see `super::state`)
//! ```
//! The version is checked before the checksum, so a snapshot written by another version is
//! named as such rather than as corrupt. Any change to what the payload holds bumps the version:
//! this VMM reads exactly one version and refuses the others.

/// The first eight bytes of every state file.
pub const MAGIC: [u8; 8] = *b"KVRSSNAP";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the envelope before the payload.
pub const HEADER_LEN: usize = 28;

/// Errors reading the envelope.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The file does not start with the magic `KVRSSNAP`.
    #[error(
        "not a kubevirt-vmm snapshot: the state file starts with {found:02x?}, not the magic \"KVRSSNAP\""
    )]
    BadMagic {
        /// The first bytes found (up to 8).
        found: Vec<u8>,
    },
    /// The file ends inside the envelope.
    #[error("the snapshot state file is truncated: {len} bytes, its header alone is {HEADER_LEN}")]
    ShortHeader {
        /// File length.
        len: usize,
    },
    /// Written by another format version.
    #[error(
        "snapshot format version {found} is not supported: this kubevirt-vmm reads version {supported} only (take the snapshot again with this version)"
    )]
    Version {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The reserved field is not zero.
    #[error("the snapshot header is corrupt: its reserved field is {0:#x}, not 0")]
    Reserved(u32),
    /// The payload is shorter or longer than the header says.
    #[error(
        "the snapshot state file is truncated or padded: the header announces {declared} payload bytes, the file holds {actual}"
    )]
    Length {
        /// Length in the header.
        declared: u64,
        /// Length present.
        actual: u64,
    },
    /// The checksum does not match.
    #[error(
        "the snapshot state file is corrupt: CRC-32 {computed:#010x} does not match the {stored:#010x} it was written with"
    )]
    Checksum {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
}

fn checksum(header_fields: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_fields);
    h.update(payload);
    h.finalize()
}

/// Wraps `payload` in the envelope.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = checksum(&out[8..24], payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Checks the envelope of `file` and returns its payload.
///
/// # Errors
/// A [`FormatError`] naming what is wrong: magic, length, version, reserved field, checksum.
pub fn open(file: &[u8]) -> Result<&[u8], FormatError> {
    let magic_len = file.len().min(MAGIC.len());
    if file.is_empty() || file[..magic_len] != MAGIC[..magic_len] {
        return Err(FormatError::BadMagic {
            found: file[..magic_len].to_vec(),
        });
    }
    if file.len() < HEADER_LEN {
        return Err(FormatError::ShortHeader { len: file.len() });
    }
    let version = le_u32(&file[8..12]);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let reserved = le_u32(&file[12..16]);
    if reserved != 0 {
        return Err(FormatError::Reserved(reserved));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&file[16..24]);
    let declared = u64::from_le_bytes(len);
    let payload = &file[HEADER_LEN..];
    if declared != payload.len() as u64 {
        return Err(FormatError::Length {
            declared,
            actual: payload.len() as u64,
        });
    }
    let stored = le_u32(&file[24..28]);
    let computed = checksum(&file[8..24], payload);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sealed_payload_opens() {
        let file = seal(b"state");
        assert_eq!(open(&file).unwrap(), b"state");
        assert_eq!(open(&seal(b"")).unwrap(), b"");
    }

    #[test]
    fn another_version_is_named_with_both_numbers() {
        let mut file = seal(b"state");
        file[8..12].copy_from_slice(&7u32.to_le_bytes());
        let err = open(&file).unwrap_err();
        assert_eq!(
            err,
            FormatError::Version {
                found: 7,
                supported: FORMAT_VERSION
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("version 7") && text.contains(&format!("version {FORMAT_VERSION}")),
            "{text}"
        );
    }

    #[test]
    fn a_flipped_payload_bit_fails_the_checksum() {
        let mut file = seal(b"state");
        file[HEADER_LEN + 2] ^= 0x10;
        assert!(matches!(open(&file), Err(FormatError::Checksum { .. })));
        let mut file = seal(b"state");
        file[25] ^= 1;
        assert!(matches!(open(&file), Err(FormatError::Checksum { .. })));
    }

    #[test]
    fn truncation_and_foreign_files_are_named() {
        let file = seal(b"state");
        assert!(matches!(
            open(&file[..file.len() - 1]),
            Err(FormatError::Length {
                declared: 5,
                actual: 4
            })
        ));
        assert!(matches!(
            open(&file[..20]),
            Err(FormatError::ShortHeader { len: 20 })
        ));
        assert!(matches!(open(b""), Err(FormatError::BadMagic { .. })));
        assert!(matches!(
            open(b"\x7fELF\x02\x01\x01\x00rest"),
            Err(FormatError::BadMagic { .. })
        ));
    }

    proptest! {
        /// Arbitrary bytes never panic the parser: they open (only if they are a valid
        /// envelope) or give an error whose message is not empty.
        #[test]
        fn arbitrary_bytes_give_a_named_error(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            match open(&data) {
                Ok(payload) => prop_assert_eq!(seal(payload), data),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        /// Arbitrary bytes after a valid magic reach the later checks (version, length, CRC).
        #[test]
        fn arbitrary_headers_after_the_magic(rest in proptest::collection::vec(any::<u8>(), 0..96)) {
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&rest);
            match open(&data) {
                Ok(payload) => prop_assert_eq!(seal(payload), data),
                Err(FormatError::BadMagic { .. }) => prop_assert!(false, "the magic was right"),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }

        /// Any single flipped bit in a sealed file is detected.
        #[test]
        fn any_flipped_bit_is_detected(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut file = seal(&payload);
            let i = bit.index(file.len() * 8);
            file[i / 8] ^= 1 << (i % 8);
            prop_assert!(open(&file).is_err());
        }
    }
}
