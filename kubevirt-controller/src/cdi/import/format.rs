//! What a stream holds, from its first bytes: a disk image format, a wrapper around one
//! (compression, tar), or something that is not a disk image at all.
//!
//! Upstream CDI matches the same magic numbers (`pkg/image/filefmt.go`); anything it does not
//! recognise is imported as raw. We do the same, except for a few well-known non-disk formats
//! (an HTML error page, zip, bzip2, 7z) that would otherwise become a "disk" of garbage: those
//! are refused with what was found.

use std::fmt;

/// How many bytes [`sniff`] looks at (the tar magic ends at 262, VDI's at 68).
pub const SNIFF_LEN: usize = 1024;

/// A disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    /// Raw bytes: copied as they are.
    Raw,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// VMware's sparse extent (monolithic sparse or stream-optimized).
    Vmdk,
    /// VirtualBox.
    Vdi,
    /// Microsoft VHD (dynamic; a fixed VHD is raw with a footer).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
}

impl DiskFormat {
    /// The name `qemu-img -f` takes.
    pub fn qemu_name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Vhd => "vpc",
            DiskFormat::Vhdx => "vhdx",
        }
    }

    /// Whether `qemu-img convert` must turn it into raw.
    pub fn needs_conversion(self) -> bool {
        self != DiskFormat::Raw
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vhdx => "vhdx",
        })
    }
}

/// A wrapper around the data: unwrapped while streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wrapper {
    /// gzip.
    Gzip,
    /// xz.
    Xz,
    /// Zstandard.
    Zstd,
    /// A tar archive (for a disk, its first regular file).
    Tar,
}

impl fmt::Display for Wrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Wrapper::Gzip => "gzip",
            Wrapper::Xz => "xz",
            Wrapper::Zstd => "zstd",
            Wrapper::Tar => "tar",
        })
    }
}

/// What the first bytes of a stream say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A wrapper to remove first.
    Wrapped(Wrapper),
    /// A disk image (anything unrecognised is [`DiskFormat::Raw`]).
    Disk(DiskFormat),
    /// Recognisably not a disk image; the name says what it is.
    NotADisk(&'static str),
    /// No bytes at all.
    Empty,
}

/// `(offset, magic, what)` of the wrappers and formats, checked in order.
const MAGICS: &[(usize, &[u8], Sniffed)] = &[
    (0, b"QFI\xfb", Sniffed::Disk(DiskFormat::Qcow2)),
    (0, b"KDMV", Sniffed::Disk(DiskFormat::Vmdk)),
    (0, b"conectix", Sniffed::Disk(DiskFormat::Vhd)),
    (0, b"vhdxfile", Sniffed::Disk(DiskFormat::Vhdx)),
    (0, b"\x1f\x8b\x08", Sniffed::Wrapped(Wrapper::Gzip)),
    (0, b"\xfd7zXZ\x00", Sniffed::Wrapped(Wrapper::Xz)),
    (0, b"\x28\xb5\x2f\xfd", Sniffed::Wrapped(Wrapper::Zstd)),
    (
        0,
        b"PK\x03\x04",
        Sniffed::NotADisk("a zip archive (not supported: use tar, gzip, xz or zstd)"),
    ),
    (
        0,
        b"BZh",
        Sniffed::NotADisk("a bzip2 stream (not supported: use gzip, xz or zstd)"),
    ),
    (
        0,
        b"7z\xbc\xaf\x27\x1c",
        Sniffed::NotADisk("a 7z archive (not supported: use tar, gzip, xz or zstd)"),
    ),
    // The magics past the start come last, so a stream that starts with one of the above is
    // that, whatever its later bytes happen to be.
    (0x40, b"\x7f\x10\xda\xbe", Sniffed::Disk(DiskFormat::Vdi)),
    (257, b"ustar", Sniffed::Wrapped(Wrapper::Tar)),
];

/// What `head` (the first up to [`SNIFF_LEN`] bytes of a stream, fewer only if the stream is
/// shorter) holds.
pub fn sniff(head: &[u8]) -> Sniffed {
    if head.is_empty() {
        return Sniffed::Empty;
    }
    for (offset, magic, what) in MAGICS {
        if head.get(*offset..offset + magic.len()) == Some(magic) {
            return *what;
        }
    }
    if looks_like_html(head) {
        return Sniffed::NotADisk("an HTML page (is the URL a download link?)");
    }
    Sniffed::Disk(DiskFormat::Raw)
}

/// An HTML document: optional whitespace, then `<!doctype html` or `<html` (any case).
fn looks_like_html(head: &[u8]) -> bool {
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    let rest = &head[start..];
    [&b"<!doctype html"[..], b"<html"]
        .iter()
        .any(|tag| rest.len() >= tag.len() && rest[..tag.len()].eq_ignore_ascii_case(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with_magic(offset: usize, magic: &[u8], len: usize) -> Vec<u8> {
        let mut head = vec![0u8; len.max(offset + magic.len())];
        head[offset..offset + magic.len()].copy_from_slice(magic);
        head
    }

    #[test]
    fn known_magics_are_recognised() {
        for (offset, magic, what) in MAGICS {
            assert_eq!(
                sniff(&with_magic(*offset, magic, SNIFF_LEN)),
                *what,
                "{magic:?}"
            );
        }
    }

    #[test]
    fn zeros_and_text_are_raw_and_nothing_is_empty() {
        assert_eq!(sniff(&[0; 512]), Sniffed::Disk(DiskFormat::Raw));
        assert_eq!(sniff(b"hello"), Sniffed::Disk(DiskFormat::Raw));
        assert_eq!(sniff(&[]), Sniffed::Empty);
    }

    #[test]
    fn html_pages_are_not_disks() {
        for page in [
            &b"<!DOCTYPE html><html>"[..],
            b"\n  <HTML><body>404",
            b"<html>",
        ] {
            assert!(matches!(sniff(page), Sniffed::NotADisk(w) if w.contains("HTML")));
        }
        assert_eq!(sniff(b"<htm"), Sniffed::Disk(DiskFormat::Raw));
    }

    #[test]
    fn a_short_stream_cannot_match_a_magic_beyond_its_end() {
        // "ustar" at 257 needs 262 bytes.
        let head = with_magic(257, b"ustar", 262);
        assert_eq!(sniff(&head[..261]), Sniffed::Disk(DiskFormat::Raw));
        assert_eq!(sniff(&head), Sniffed::Wrapped(Wrapper::Tar));
    }

    #[test]
    fn qemu_names() {
        assert_eq!(DiskFormat::Vhd.qemu_name(), "vpc");
        assert_eq!(DiskFormat::Vhd.to_string(), "vhd");
        assert!(!DiskFormat::Raw.needs_conversion());
        assert!(DiskFormat::Vmdk.needs_conversion());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(head in proptest::collection::vec(any::<u8>(), 0..1100)) {
            let _ = sniff(&head);
        }

        #[test]
        fn a_valid_header_is_always_recognised(
            index in 0..MAGICS.len(),
            tail in proptest::collection::vec(any::<u8>(), 0..SNIFF_LEN),
        ) {
            let (offset, magic, what) = MAGICS[index];
            let mut head = vec![0u8; offset];
            head.extend_from_slice(magic);
            head.extend_from_slice(&tail);
            head.truncate(SNIFF_LEN.max(offset + magic.len()));
            // Magics at 0 are checked first; the zeros before VDI's and tar's spell none.
            prop_assert_eq!(sniff(&head), what);
        }
    }
}
