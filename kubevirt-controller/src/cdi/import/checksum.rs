//! A DataVolume's `checksum` (`algorithm:hex`, with md5, sha1, sha256 or sha512, as upstream):
//! the source's bytes, as they arrive (before any unwrapping), must hash to it, or the import
//! fails before its disk is put in place.

use sha2::digest::DynDigest;
use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;
use thiserror::Error;

/// A hash algorithm upstream accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// MD5.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Hex digits of a digest.
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha1 => 40,
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn hasher(self) -> Box<dyn DynDigest> {
        match self {
            Algorithm::Md5 => Box::new(md5::Md5::default()),
            Algorithm::Sha1 => Box::new(sha1::Sha1::default()),
            Algorithm::Sha256 => Box::new(sha2::Sha256::default()),
            Algorithm::Sha512 => Box::new(sha2::Sha512::default()),
        }
    }
}

/// The expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The digest, lowercase hex.
    pub hex: String,
}

/// Checksum failures.
#[derive(Debug, Error)]
pub enum ChecksumError {
    /// The checksum text is malformed.
    #[error(
        "checksum {text:?} is invalid: {reason} (expected algorithm:hex with md5, sha1, sha256 or sha512)"
    )]
    Invalid {
        /// The text.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// The data does not match (upstream's message).
    #[error(
        "checksum mismatch: expected {algorithm}:{expected}, calculated {algorithm}:{calculated}"
    )]
    Mismatch {
        /// The algorithm's name.
        algorithm: &'static str,
        /// The expected digest.
        expected: String,
        /// The data's digest.
        calculated: String,
    },
    /// Reading the rest of the source to hash it failed.
    #[error("reading the source to verify its checksum: {0}")]
    Read(#[source] io::Error),
}

impl Checksum {
    /// Parses `algorithm:hex` (the algorithm in any case; the digest in either case).
    pub fn parse(text: &str) -> Result<Checksum, ChecksumError> {
        let invalid = |reason: &str| ChecksumError::Invalid {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (algorithm, hex) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| invalid("no ':'"))?;
        let algorithm = match algorithm.to_ascii_lowercase().as_str() {
            "md5" => Algorithm::Md5,
            "sha1" => Algorithm::Sha1,
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("unsupported algorithm")),
        };
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(&format!(
                "a {} digest is {} hex digits",
                algorithm.name(),
                algorithm.hex_len()
            )));
        }
        Ok(Checksum {
            algorithm,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

struct State {
    reader: Box<dyn Read>,
    hasher: Option<Box<dyn DynDigest>>,
}

/// Hashes what is read through it. Clones share the stream: the pipeline reads one, and
/// [`Verifier::verify`] hashes whatever the pipeline left unread (the rest of a tar archive)
/// through another.
#[derive(Clone)]
pub struct Verifier {
    state: Rc<RefCell<State>>,
    expected: Checksum,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Hashes `reader` against `expected`.
    pub fn new(reader: Box<dyn Read>, expected: Checksum) -> Verifier {
        let hasher = Some(expected.algorithm.hasher());
        Verifier {
            state: Rc::new(RefCell::new(State { reader, hasher })),
            expected,
        }
    }

    /// Reads the rest of the stream and compares the digest.
    pub fn verify(&self) -> Result<(), ChecksumError> {
        io::copy(&mut self.clone(), &mut io::sink()).map_err(ChecksumError::Read)?;
        let Some(hasher) = self.state.borrow_mut().hasher.take() else {
            return Err(ChecksumError::Read(io::Error::other("verified twice")));
        };
        let calculated: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if calculated != self.expected.hex {
            return Err(ChecksumError::Mismatch {
                algorithm: self.expected.algorithm.name(),
                expected: self.expected.hex.clone(),
                calculated,
            });
        }
        tracing::info!(
            algorithm = self.expected.algorithm.name(),
            "checksum verified"
        );
        Ok(())
    }
}

impl Read for Verifier {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.state.borrow_mut();
        let n = state.reader.read(buf)?;
        if let Some(hasher) = state.hasher.as_mut() {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn known_digests_verify_even_when_the_reader_stops_early() {
        for (text, data) in [
            (format!("sha256:{ABC_SHA256}"), &b"abc"[..]),
            ("MD5:900150983CD24FB0D6963F7D28E17F72".to_string(), b"abc"),
            (
                "sha1:a9993e364706816aba3e25717850c26c9cd0d89d".to_string(),
                b"abc",
            ),
        ] {
            let v = Verifier::new(Box::new(data), Checksum::parse(&text).unwrap());
            let mut first = [0u8; 1];
            v.clone().read_exact(&mut first).unwrap();
            v.verify().unwrap();
        }
    }

    #[test]
    fn a_mismatch_names_both_digests() {
        let v = Verifier::new(
            Box::new(&b"abd"[..]),
            Checksum::parse(&format!("sha256:{ABC_SHA256}")).unwrap(),
        );
        let e = v.verify().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "checksum mismatch: expected sha256:{ABC_SHA256}, calculated sha256:"
            )),
            "{e}"
        );
    }

    #[test]
    fn malformed_checksums_are_refused() {
        for text in [
            "sha256",
            "crc32:00",
            "sha256:abc",
            &format!("sha512:{ABC_SHA256}"),
            &format!("sha256:{}", "g".repeat(64)),
        ] {
            assert!(
                matches!(Checksum::parse(text), Err(ChecksumError::Invalid { .. })),
                "{text}"
            );
        }
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in ".*") {
            let _ = Checksum::parse(&text);
        }

        #[test]
        fn any_valid_sha512_parses(hex in "[0-9a-fA-F]{128}") {
            let c = Checksum::parse(&format!("sha512:{hex}")).unwrap();
            prop_assert_eq!(c.hex, hex.to_ascii_lowercase());
        }
    }
}
