//! Copying a raw stream into a file or a device: bounded by the room there is, and sparse on a
//! file (blocks of zeros become holes, as `qemu-img convert` leaves them).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use thiserror::Error;

/// Bytes read at a time.
const CHUNK: usize = 1 << 20;
/// Zero runs this long (and aligned) become holes.
const HOLE: usize = 64 << 10;

/// Failures of the copy.
#[derive(Debug, Error)]
pub enum WriteError {
    /// The source failed (network, decompression).
    #[error("reading the source: {0}")]
    Read(#[source] io::Error),
    /// The target failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The target.
        path: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// More data than room.
    #[error(
        "the image is larger than the reported available storage {available} ({explanation}): more than {available} bytes arrived. A larger PVC is required"
    )]
    TooLarge {
        /// The room.
        available: u64,
        /// Where the room came from.
        explanation: String,
    },
}

/// Where the bytes go.
#[derive(Debug)]
pub struct Destination<'a> {
    /// The open file or device.
    pub file: &'a File,
    /// Its path, for messages.
    pub path: &'a Path,
    /// A device keeps whatever it held before, so zeros are written; a new file reads zeros
    /// in its holes.
    pub is_device: bool,
    /// The most bytes that fit.
    pub available: u64,
    /// How `available` came about.
    pub explanation: &'a str,
}

/// Copies all of `reader` to the start of `dest`; returns the number of bytes. A file ends up
/// exactly that long.
pub fn copy_raw(reader: &mut dyn Read, dest: &Destination<'_>) -> Result<u64, WriteError> {
    let write_err = |source| WriteError::Write {
        path: dest.path.display().to_string(),
        source,
    };
    let mut buf = vec![0u8; CHUNK];
    let mut pos: u64 = 0;
    loop {
        let n = fill(reader, &mut buf).map_err(WriteError::Read)?;
        if n == 0 {
            break;
        }
        if pos + n as u64 > dest.available {
            return Err(WriteError::TooLarge {
                available: dest.available,
                explanation: dest.explanation.to_string(),
            });
        }
        for (i, block) in buf[..n].chunks(HOLE).enumerate() {
            let offset = pos + (i * HOLE) as u64;
            if dest.is_device || block.iter().any(|b| *b != 0) {
                dest.file.write_all_at(block, offset).map_err(write_err)?;
            }
        }
        pos += n as u64;
    }
    if !dest.is_device {
        dest.file.set_len(pos).map_err(write_err)?;
    }
    Ok(pos)
}

/// Reads until `buf` is full or the stream ends.
fn fill(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn dest<'a>(file: &'a File, path: &'a Path, available: u64) -> Destination<'a> {
        Destination {
            file,
            path,
            is_device: false,
            available,
            explanation: "the test",
        }
    }

    #[test]
    fn zeros_become_holes_and_data_arrives() {
        let dir = kubevirt_testsupport::tempdir("writer");
        let path = dir.join("disk");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let mut data = vec![0u8; 8 << 20];
        data[5 << 20..(5 << 20) + 5].copy_from_slice(b"MARK!");
        let n = copy_raw(&mut &data[..], &dest(&file, &path, 8 << 20)).unwrap();
        assert_eq!(n, 8 << 20);
        assert_eq!(std::fs::read(&path).unwrap(), data);
        // One 64 KiB block written (plus filesystem metadata at most).
        assert!(file.metadata().unwrap().blocks() * 512 < 1 << 20);
    }

    #[test]
    fn more_than_the_room_is_refused() {
        let dir = kubevirt_testsupport::tempdir("writer");
        let path = dir.join("disk");
        let file = File::create(&path).unwrap();
        let data = vec![1u8; 3000];
        let e = copy_raw(&mut &data[..], &dest(&file, &path, 2048)).unwrap_err();
        assert!(
            e.to_string()
                .contains("larger than the reported available storage 2048 (the test)"),
            "{e}"
        );
    }
}
