//! The migration stream's disk parts (see `wire.rs` for the framing): the disk list a `Hello`
//! carries, and the `Disk` frames that copy the contents of the disks that live with the VMI.
//!
//! ```text
//! Hello ... | disks u32 | (size u64, flags u32)*          flags bit 0: copied over the stream
//! Disk      round u32 | count u32 | (disk u32, offset u64, len u32, kind u8, [len bytes])*
//!                                                         kind 0: data follows, 1: zeroes
//! ```
//! Offsets and lengths are whole 512-byte sectors, a chunk at most [`DISK_CHUNK_MAX`] bytes;
//! the target checks each chunk's disk index and range against its own disks.

use super::wire::{Cursor, WireError};

/// Most bytes one chunk carries.
pub const DISK_CHUNK_MAX: u32 = 1 << 20;
/// Most chunks one `Disk` frame carries.
pub const CHUNKS_PER_FRAME: usize = 16;
/// Most disks a `Hello` may list.
const MAX_DISKS: u32 = 256;
/// Offsets and lengths are multiples of this.
pub const DISK_SECTOR: u64 = 512;

const FLAG_COPY: u32 = 1;
const KIND_DATA: u8 = 0;
const KIND_ZEROES: u8 = 1;

/// A disk as the source announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in bytes.
    pub size: u64,
    /// Its contents are copied over the stream (a disk that lives with the VMI); otherwise
    /// both sides open the same image.
    pub copy: bool,
}

/// What a chunk holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskData {
    /// This many bytes of zeroes (no data follows).
    Zeroes(u32),
    /// The bytes.
    Bytes(Vec<u8>),
}

/// A range of one disk's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskChunk {
    /// The disk's index in the `Hello` list.
    pub disk: u32,
    /// Byte offset in the disk.
    pub offset: u64,
    /// The contents.
    pub data: DiskData,
}

impl DiskChunk {
    /// Bytes of the disk the chunk covers.
    pub fn len(&self) -> u64 {
        match &self.data {
            DiskData::Zeroes(n) => u64::from(*n),
            DiskData::Bytes(b) => b.len() as u64,
        }
    }

    /// Whether it covers nothing (never sent).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Appends the disk list of a `Hello`.
pub(super) fn append_disks(p: &mut Vec<u8>, disks: &[DiskInfo]) {
    p.extend_from_slice(&(disks.len() as u32).to_le_bytes());
    for d in disks {
        p.extend_from_slice(&d.size.to_le_bytes());
        let flags = if d.copy { FLAG_COPY } else { 0 };
        p.extend_from_slice(&flags.to_le_bytes());
    }
}

/// Parses the disk list of a `Hello`.
pub(super) fn decode_disks(c: &mut Cursor<'_>) -> Result<Vec<DiskInfo>, WireError> {
    let n = c.u32("the Hello disk count")?;
    if n > MAX_DISKS {
        return Err(WireError::Malformed(format!(
            "Hello announces {n} disks (at most {MAX_DISKS})"
        )));
    }
    (0..n)
        .map(|i| {
            let size = c.u64("a Hello disk size")?;
            let flags = c.u32("a Hello disk's flags")?;
            if flags & !FLAG_COPY != 0 {
                return Err(WireError::Malformed(format!(
                    "Hello disk {i} has unknown flags {flags:#x}"
                )));
            }
            Ok(DiskInfo {
                size,
                copy: flags & FLAG_COPY != 0,
            })
        })
        .collect()
}

/// Appends a `Disk` frame's payload.
pub(super) fn append_chunks(p: &mut Vec<u8>, round: u32, chunks: &[DiskChunk]) {
    p.extend_from_slice(&round.to_le_bytes());
    p.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for ch in chunks {
        p.extend_from_slice(&ch.disk.to_le_bytes());
        p.extend_from_slice(&ch.offset.to_le_bytes());
        p.extend_from_slice(&(ch.len() as u32).to_le_bytes());
        match &ch.data {
            DiskData::Zeroes(_) => p.push(KIND_ZEROES),
            DiskData::Bytes(b) => {
                p.push(KIND_DATA);
                p.extend_from_slice(b);
            }
        }
    }
}

/// Parses a `Disk` frame's payload: the round and the chunks, each checked for sector
/// alignment and size (the disk index and range are checked by the target, which knows its
/// disks).
pub(super) fn decode_chunks(c: &mut Cursor<'_>) -> Result<(u32, Vec<DiskChunk>), WireError> {
    let round = c.u32("the Disk round")?;
    let n = c.u32("the Disk chunk count")? as usize;
    if n > CHUNKS_PER_FRAME {
        return Err(WireError::Malformed(format!(
            "a Disk frame announces {n} chunks (at most {CHUNKS_PER_FRAME})"
        )));
    }
    let mut chunks = Vec::with_capacity(n);
    for _ in 0..n {
        let disk = c.u32("a disk chunk's disk")?;
        let offset = c.u64("a disk chunk's offset")?;
        let len = c.u32("a disk chunk's length")?;
        let kind = c.u8("a disk chunk's kind")?;
        if len == 0
            || len > DISK_CHUNK_MAX
            || !u64::from(len).is_multiple_of(DISK_SECTOR)
            || !offset.is_multiple_of(DISK_SECTOR)
            || offset.checked_add(u64::from(len)).is_none()
        {
            return Err(WireError::Malformed(format!(
                "a chunk of disk {disk} at offset {offset} is {len} bytes: chunks are 1 to {DISK_CHUNK_MAX} bytes of whole {DISK_SECTOR}-byte sectors"
            )));
        }
        let data = match kind {
            KIND_ZEROES => DiskData::Zeroes(len),
            KIND_DATA => DiskData::Bytes(c.take(len as usize, "a disk chunk's data")?.to_vec()),
            other => {
                return Err(WireError::Malformed(format!(
                    "a chunk of disk {disk} has unknown kind {other}"
                )));
            }
        };
        chunks.push(DiskChunk { disk, offset, data });
    }
    Ok((round, chunks))
}

#[cfg(test)]
mod tests {
    use super::super::wire::{Hello, Message, read_message};
    use super::*;
    use proptest::prelude::*;

    fn chunk(disk: u32, offset: u64, data: DiskData) -> DiskChunk {
        DiskChunk { disk, offset, data }
    }

    #[test]
    fn unaligned_empty_or_oversized_chunks_are_refused_by_name() {
        for (offset, len) in [(100, 512), (0, 100), (0, 0), (0, DISK_CHUNK_MAX + 512)] {
            let mut p = Vec::new();
            append_chunks(&mut p, 0, &[chunk(3, 0, DiskData::Zeroes(512))]);
            // Patch the offset and length in place.
            p[12..20].copy_from_slice(&u64::to_le_bytes(offset));
            p[20..24].copy_from_slice(&u32::to_le_bytes(len));
            let e = decode_chunks(&mut Cursor::new(&p)).unwrap_err().to_string();
            assert!(
                e.contains("disk 3") && e.contains("whole 512-byte sectors"),
                "{e}"
            );
        }
        let mut p = Vec::new();
        append_chunks(&mut p, 0, &[chunk(0, 0, DiskData::Zeroes(512))]);
        *p.last_mut().unwrap() = 9;
        let e = decode_chunks(&mut Cursor::new(&p)).unwrap_err().to_string();
        assert!(e.contains("unknown kind 9"), "{e}");
    }

    fn arb_chunk() -> impl Strategy<Value = DiskChunk> {
        let data = prop_oneof![
            (1u32..=16).prop_map(|s| DiskData::Zeroes(s * 512)),
            (1usize..=4, any::<u8>()).prop_map(|(s, b)| DiskData::Bytes(vec![b; s * 512])),
        ];
        (0u32..4, 0u64..1 << 20, data).prop_map(|(d, o, data)| chunk(d, o * 512, data))
    }

    proptest! {
        #[test]
        fn disk_frames_round_trip(
            round in any::<u32>(),
            chunks in proptest::collection::vec(arb_chunk(), 0..=CHUNKS_PER_FRAME),
            disks in proptest::collection::vec((any::<u64>(), any::<bool>()), 0..8),
        ) {
            let msg = Message::Disk { round, chunks };
            prop_assert_eq!(read_message(&mut &msg.encode()[..]).unwrap(), msg);
            let hello = Message::Hello(Hello {
                vcpus: 1,
                memory_size: 1 << 20,
                regions: vec![(0, 1 << 20)],
                disks: disks.into_iter().map(|(size, copy)| DiskInfo { size, copy }).collect(),
            });
            prop_assert_eq!(read_message(&mut &hello.encode()[..]).unwrap(), hello);
        }

        #[test]
        fn any_payload_decodes_or_errors_without_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let _ = decode_chunks(&mut Cursor::new(&payload));
            let _ = decode_disks(&mut Cursor::new(&payload));
        }

        #[test]
        fn a_damaged_disk_frame_is_refused(
            chunks in proptest::collection::vec(arb_chunk(), 1..4),
            at in any::<usize>(), bit in 0u8..8,
        ) {
            let mut frame = Message::Disk { round: 1, chunks }.encode();
            let at = at % frame.len();
            frame[at] ^= 1 << bit;
            prop_assert!(read_message(&mut &frame[..]).is_err());
        }
    }
}
