//! One virtio-blk request: parse the descriptor chain, run it against the backend, write the
//! status. Nothing the guest wrote is trusted: lengths, sectors and segment counts are checked
//! before any I/O, buffers are reached only through checked guest-memory slices, and data moves
//! in bounded chunks whatever length the chain claims.

use std::io::{self, Write};

use virtio_queue::DescriptorChain;
use virtio_queue::desc::split::Descriptor;
use vm_memory::bitmap::{AtomicBitmap, RefSlice};
use vm_memory::{Address, ByteValued, GuestMemoryBackend};
use crate::memory::{GuestMemoryMmap, GuestSlice};

use super::backend::BlockBackend;
use super::error_policy::ErrorPolicy;

/// Bytes per sector, the unit of every request's `sector` field.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes of the disk ID (`serial`) a `GET_ID` request returns.
pub const SERIAL_LEN: usize = 20;
/// Segments one discard or write-zeroes request may carry.
pub const MAX_SEGMENTS: u32 = 16;
/// Sectors one discard or write-zeroes segment may cover (2 GiB).
pub const MAX_SEGMENT_SECTORS: u32 = 1 << 22;

/// Read.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Write.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Flush.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Get the device ID string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Discard.
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
/// Write zeroes.
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;

/// Success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// The request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// The request type is not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

const WRITE_ZEROES_UNMAP: u32 = 1;
/// Bytes of the request header at the start of the readable part.
const HEADER_LEN: usize = std::mem::size_of::<RequestHeader>();

/// `struct virtio_blk_outhdr`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct RequestHeader {
    request_type: u32,
    reserved: u32,
    sector: u64,
}

// SAFETY: plain little-endian integers without padding; every bit pattern is valid.
unsafe impl ByteValued for RequestHeader {}

/// `struct virtio_blk_discard_write_zeroes`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
struct Segment {
    sector: u64,
    num_sectors: u32,
    flags: u32,
}

// SAFETY: plain integers without padding; every bit pattern is valid.
unsafe impl ByteValued for Segment {}

/// Why a request failed. The guest sees only the status byte; the message goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The readable part is shorter than the 16-byte header.
    #[error("the request header is missing or short")]
    Header,
    /// The data length is not a whole number of sectors.
    #[error("data length {0} is not a multiple of 512")]
    DataLength(usize),
    /// The request reaches past the end of the disk.
    #[error("sector {sector} + {len} bytes is past the end of the disk")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Bytes.
        len: u64,
    },
    /// A write-type request to a read-only disk.
    #[error("the disk is read-only")]
    ReadOnly,
    /// Malformed discard/write-zeroes segments.
    #[error("invalid discard/write-zeroes segments: {0}")]
    Segments(&'static str),
    /// Guest memory of the chain is not accessible.
    #[error("the descriptor chain's buffers are not in guest memory")]
    GuestMemory,
    /// The backend failed.
    #[error("disk I/O: {0}")]
    Io(#[from] io::Error),
    /// Unknown request type.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
}

impl RequestError {
    /// The status byte the guest gets.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) | RequestError::Segments("unmap flag on discard") => {
                VIRTIO_BLK_S_UNSUPP
            }
            _ => VIRTIO_BLK_S_IOERR,
        }
    }
}

/// The byte range `len` bytes from `sector` covers, if it is whole sectors inside the disk.
fn disk_range(sector: u64, len: u64, size: u64) -> Result<u64, RequestError> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(RequestError::DataLength(len as usize));
    }
    let offset = sector.checked_mul(SECTOR_SIZE);
    match offset.and_then(|o| o.checked_add(len).map(|end| (o, end))) {
        Some((o, end)) if end <= size => Ok(o),
        _ => Err(RequestError::OutOfRange { sector, len }),
    }
}

type ChainReader<'a> = virtio_queue::Reader<'a, RefSlice<'a, AtomicBitmap>>;
type ChainWriter<'a> = virtio_queue::Writer<'a, RefSlice<'a, AtomicBitmap>>;

/// Runs the request in `chain` against `disk` and writes its status. Returns the number of
/// bytes written into the chain's device-writable buffers (the used-ring length). A chain
/// with no writable byte for the status cannot be answered: 0 is returned and nothing written.
pub fn process_request(
    memory: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    disk: &mut dyn BlockBackend,
    serial: &[u8; SERIAL_LEN],
) -> u32 {
    // The report policy never holds a request: always Ok.
    process_request_with(memory, chain, disk, serial, ErrorPolicy::Report).unwrap_or_default()
}

/// [`process_request`] under `policy`: `Err(error)` when the backend failed and the policy
/// stops on it — nothing was written to the chain, which the caller must hold and run again.
///
/// # Errors
/// The backend's error, when `policy` stops on it.
pub fn process_request_with(
    memory: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    disk: &mut dyn BlockBackend,
    serial: &[u8; SERIAL_LEN],
    policy: ErrorPolicy,
) -> Result<u32, io::Error> {
    let Ok(mut writer) = chain.clone().writer(memory) else {
        return Ok(0);
    };
    let writable = writer.available_bytes();
    if writable == 0 {
        return Ok(0);
    }
    let Ok(mut status_writer) = writer.split_at(writable - 1) else {
        return Ok(0);
    };
    let result = match chain.clone().reader(memory) {
        Ok(mut reader) => run(memory, &chain, &mut reader, &mut writer, disk, serial),
        Err(_) => Err(RequestError::GuestMemory),
    };
    let (status, data) = match result {
        Ok(data) => (VIRTIO_BLK_S_OK, data as u32),
        Err(RequestError::Io(e)) if policy.stops_on(&e) => return Err(e),
        Err(RequestError::Io(e)) if policy == ErrorPolicy::Ignore => {
            log::debug!("virtio-blk request failed, ignored by its error policy: {e}");
            (VIRTIO_BLK_S_OK, 0)
        }
        Err(e) => {
            log::debug!("virtio-blk request failed: {e}");
            (e.status(), 0)
        }
    };
    if status_writer.write_obj(status).is_err() {
        return Ok(data);
    }
    Ok(data + 1)
}

/// The guest-memory slices of `descs` from byte `skip` on, `len` bytes in all: where a
/// request's data is, for the backend to move it without a copy.
fn data_slices<'m>(
    memory: &'m GuestMemoryMmap,
    descs: impl Iterator<Item = Descriptor>,
    mut skip: usize,
    len: usize,
) -> Result<Vec<GuestSlice<'m>>, RequestError> {
    let mut out = Vec::new();
    let mut want = len;
    for d in descs {
        if want == 0 {
            break;
        }
        let dlen = d.len() as usize;
        if skip >= dlen {
            skip -= dlen;
            continue;
        }
        let take = (dlen - skip).min(want);
        let start = d
            .addr()
            .checked_add(skip as u64)
            .ok_or(RequestError::GuestMemory)?;
        for slice in memory.get_slices(start, take) {
            out.push(slice.map_err(|_| RequestError::GuestMemory)?);
        }
        want -= take;
        skip = 0;
    }
    if want == 0 {
        Ok(out)
    } else {
        Err(RequestError::GuestMemory)
    }
}

/// Runs one request; returns the bytes of data written into the chain (its status excluded).
fn run(
    memory: &GuestMemoryMmap,
    chain: &DescriptorChain<&GuestMemoryMmap>,
    reader: &mut ChainReader<'_>,
    writer: &mut ChainWriter<'_>,
    disk: &mut dyn BlockBackend,
    serial: &[u8; SERIAL_LEN],
) -> Result<usize, RequestError> {
    let header: RequestHeader = reader.read_obj().map_err(|_| RequestError::Header)?;
    let size = disk.size();
    match header.request_type {
        VIRTIO_BLK_T_IN => {
            // The writable part minus its last byte, the status (as `writer` was cut).
            let len = writer.available_bytes();
            let offset = disk_range(header.sector, len as u64, size)?;
            let bufs = data_slices(memory, chain.clone().writable(), 0, len)?;
            disk.read_to_guest(&bufs, offset)?;
            Ok(len)
        }
        VIRTIO_BLK_T_OUT => {
            if disk.read_only() {
                return Err(RequestError::ReadOnly);
            }
            let len = reader.available_bytes();
            let offset = disk_range(header.sector, len as u64, size)?;
            let bufs = data_slices(memory, chain.clone().readable(), HEADER_LEN, len)?;
            disk.write_from_guest(&bufs, offset)?;
            Ok(0)
        }
        VIRTIO_BLK_T_FLUSH => disk.flush().map(|()| 0).map_err(RequestError::from),
        VIRTIO_BLK_T_GET_ID => {
            let n = writer.available_bytes().min(SERIAL_LEN);
            writer
                .write_all(&serial[..n])
                .map(|()| n)
                .map_err(|_| RequestError::GuestMemory)
        }
        t @ (VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES) => {
            if disk.read_only() {
                return Err(RequestError::ReadOnly);
            }
            let bytes = reader.available_bytes();
            let seg_size = std::mem::size_of::<Segment>();
            if bytes == 0 || !bytes.is_multiple_of(seg_size) {
                return Err(RequestError::Segments(
                    "not a whole number of 16-byte segments",
                ));
            }
            if bytes / seg_size > MAX_SEGMENTS as usize {
                return Err(RequestError::Segments("more segments than max_discard_seg"));
            }
            // Check every segment before touching the disk.
            let mut segments = Vec::with_capacity(bytes / seg_size);
            for _ in 0..bytes / seg_size {
                let s: Segment = reader.read_obj().map_err(|_| RequestError::GuestMemory)?;
                if s.num_sectors > MAX_SEGMENT_SECTORS {
                    return Err(RequestError::Segments(
                        "segment larger than the advertised maximum",
                    ));
                }
                if t == VIRTIO_BLK_T_DISCARD && s.flags != 0 {
                    return Err(RequestError::Segments("unmap flag on discard"));
                }
                if s.flags & !WRITE_ZEROES_UNMAP != 0 {
                    return Err(RequestError::Segments("reserved flag bits set"));
                }
                let len = u64::from(s.num_sectors) * SECTOR_SIZE;
                segments.push((disk_range(s.sector, len, size)?, len));
            }
            for (offset, len) in segments {
                if t == VIRTIO_BLK_T_DISCARD {
                    disk.discard(offset, len)?;
                } else {
                    disk.write_zeroes(offset, len)?;
                }
            }
            Ok(0)
        }
        other => Err(RequestError::Unsupported(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_must_be_whole_sectors_inside_the_disk() {
        assert_eq!(disk_range(1, 1024, 4096).unwrap(), 512);
        assert!(matches!(
            disk_range(0, 100, 4096),
            Err(RequestError::DataLength(100))
        ));
        assert!(matches!(
            disk_range(7, 1024, 4096),
            Err(RequestError::OutOfRange { .. })
        ));
        assert!(matches!(
            disk_range(u64::MAX, 512, u64::MAX),
            Err(RequestError::OutOfRange { .. })
        ));
        assert!(matches!(
            disk_range(1 << 55, 0, u64::MAX),
            Err(RequestError::OutOfRange { .. })
        ));
        assert_eq!(disk_range(8, 0, 4096).unwrap(), 4096);
    }

    #[test]
    fn unsupported_requests_say_so() {
        assert_eq!(RequestError::Unsupported(99).status(), VIRTIO_BLK_S_UNSUPP);
        assert_eq!(RequestError::ReadOnly.status(), VIRTIO_BLK_S_IOERR);
    }
}
