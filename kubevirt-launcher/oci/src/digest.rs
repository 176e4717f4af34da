//! Content digests (`sha256:<hex>`): computing them, and verifying a stream against one.

use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex part of a `sha256:` digest, if it is one (64 hex digits).
pub fn digest_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Content whose digest is not the one asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("blob {expected} has digest {actual}: the download is corrupt or the registry is lying")]
pub struct DigestMismatch {
    /// The digest asked for.
    pub expected: String,
    /// The digest of what arrived.
    pub actual: String,
}

/// A reader that hashes what passes through it; [`DigestReader::finish`] reads the rest and
/// compares the whole stream's digest with the expected one.
#[derive(Debug)]
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    expected: String,
}

impl<R: Read> DigestReader<R> {
    /// Hashes `inner`, which must have digest `expected` (`sha256:<hex>`).
    pub fn new(inner: R, expected: &str) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            expected: expected.to_ascii_lowercase(),
        }
    }

    /// Reads what is left and checks the digest.
    ///
    /// # Errors
    /// The read's I/O error, or [`DigestMismatch`] (as `InvalidData`).
    pub fn finish(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        let actual = format!("sha256:{}", hex(&self.hasher.finalize()));
        if actual == self.expected {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                DigestMismatch {
                    expected: self.expected,
                    actual,
                },
            ))
        }
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_checked_whole_even_if_read_in_part() {
        let data = vec![7u8; 100_000];
        let d = digest_of(&data);
        assert_eq!(digest_hex(&d).map(str::len), Some(64));
        let mut r = DigestReader::new(&data[..], &d);
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        r.finish().unwrap();
        let e = DigestReader::new(&data[..99_999], &d).finish().unwrap_err();
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<DigestMismatch>());
        assert_eq!(inner.map(|m| m.expected.as_str()), Some(d.as_str()));
        assert_eq!(digest_hex("sha256:abc"), None);
        assert_eq!(digest_hex("md5:00"), None);
    }
}
