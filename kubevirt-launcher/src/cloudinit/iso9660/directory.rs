//! Directory records (ECMA-119 9.1) and the directory extents that hold them.

use super::SECTOR_SIZE;
use super::encoding::{Timestamp, both_u16, both_u32};

/// Bytes of a directory record before its identifier.
const FIXED_LEN: usize = 33;

/// File flag (ECMA-119 9.1.6): the record describes a directory.
const FLAG_DIRECTORY: u8 = 0x02;

/// The identifier of a directory's own `.` record.
pub const SELF_ID: &[u8] = &[0x00];

/// The identifier of a directory's `..` record.
pub const PARENT_ID: &[u8] = &[0x01];

/// One directory record to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// First sector of the file or directory.
    pub extent: u32,
    /// Length in bytes.
    pub size: u32,
    /// Whether it is a directory.
    pub dir: bool,
    /// File identifier, already encoded for its tree.
    pub id: &'a [u8],
}

/// Length of a record with an identifier of `id_len` bytes: padded to an even length
/// (ECMA-119 9.1.12).
pub fn record_len(id_len: usize) -> usize {
    let len = FIXED_LEN + id_len;
    len + len % 2
}

impl Record<'_> {
    /// Appends the record to `out`.
    pub fn write(&self, out: &mut Vec<u8>, date: &Timestamp) {
        let len = record_len(self.id.len());
        let start = out.len();
        out.resize(start + len, 0);
        let rec = &mut out[start..];
        // Identifiers are at most 128 bytes (64 UCS-2 characters), so the length fits a byte.
        rec[0] = u8::try_from(len).unwrap_or(u8::MAX);
        rec[1] = 0; // extended attribute record length
        both_u32(&mut rec[2..10], self.extent);
        both_u32(&mut rec[10..18], self.size);
        rec[18..25].copy_from_slice(&date.record_bytes());
        rec[25] = if self.dir { FLAG_DIRECTORY } else { 0 };
        rec[26] = 0; // file unit size (not interleaved)
        rec[27] = 0; // interleave gap size
        both_u16(&mut rec[28..32], 1); // volume sequence number
        rec[32] = u8::try_from(self.id.len()).unwrap_or(u8::MAX);
        rec[33..33 + self.id.len()].copy_from_slice(self.id);
    }
}

/// Bytes a directory extent takes for records whose identifiers have the given lengths (the `.`
/// and `..` records included by the caller): records never cross a sector boundary (ECMA-119
/// 6.8.1.1), and the extent is a whole number of sectors.
pub fn extent_len(id_lens: impl IntoIterator<Item = usize>) -> usize {
    let mut used = 0usize;
    for id_len in id_lens {
        let len = record_len(id_len);
        if used % SECTOR_SIZE + len > SECTOR_SIZE {
            used = used.next_multiple_of(SECTOR_SIZE);
        }
        used += len;
    }
    used.next_multiple_of(SECTOR_SIZE).max(SECTOR_SIZE)
}

/// The bytes of a directory extent holding `records` in order, padded to whole sectors. Its
/// length equals [`extent_len`] of the same identifiers.
pub fn write_extent(records: &[Record<'_>], date: &Timestamp) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        let len = record_len(record.id.len());
        if out.len() % SECTOR_SIZE + len > SECTOR_SIZE {
            out.resize(out.len().next_multiple_of(SECTOR_SIZE), 0);
        }
        record.write(&mut out, date);
    }
    let end = out.len().next_multiple_of(SECTOR_SIZE).max(SECTOR_SIZE);
    out.resize(end, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_record_is_34_bytes() {
        let mut out = Vec::new();
        Record {
            extent: 20,
            size: 2048,
            dir: true,
            id: SELF_ID,
        }
        .write(&mut out, &Timestamp::Y2K);
        assert_eq!(out.len(), 34);
        assert_eq!(out[0], 34);
        assert_eq!(&out[2..10], &[20, 0, 0, 0, 0, 0, 0, 20]);
        assert_eq!(&out[10..18], &[0, 8, 0, 0, 0, 0, 8, 0]);
        assert_eq!(&out[18..25], &[100, 1, 1, 0, 0, 0, 0]);
        assert_eq!(out[25], FLAG_DIRECTORY);
        assert_eq!(&out[28..32], &[1, 0, 0, 1]);
        assert_eq!(out[32], 1);
        assert_eq!(out[33], 0);
    }

    #[test]
    fn odd_records_are_padded() {
        assert_eq!(record_len(1), 34);
        assert_eq!(record_len(2), 36);
        assert_eq!(record_len(9), 42);
        let mut out = Vec::new();
        Record {
            extent: 1,
            size: 3,
            dir: false,
            id: b"AB;1",
        }
        .write(&mut out, &Timestamp::Y2K);
        assert_eq!(out.len(), 38);
        assert_eq!(out[25], 0);
        assert_eq!(&out[33..37], b"AB;1");
        assert_eq!(out[37], 0);
    }

    #[test]
    fn records_do_not_cross_sectors() {
        // 2 + 15 records of 160 bytes: 2 * 34 + 12 * 160 = 1988 fits, the 13th starts sector 2.
        let id = [b'X'; 127];
        let mut lens = vec![1, 1];
        lens.extend(std::iter::repeat_n(id.len(), 15));
        assert_eq!(extent_len(lens.iter().copied()), 2 * SECTOR_SIZE);
        let mut records = vec![
            Record {
                extent: 0,
                size: 0,
                dir: true,
                id: SELF_ID,
            },
            Record {
                extent: 0,
                size: 0,
                dir: true,
                id: PARENT_ID,
            },
        ];
        records.extend(std::iter::repeat_n(
            Record {
                extent: 0,
                size: 0,
                dir: false,
                id: &id,
            },
            15,
        ));
        let bytes = write_extent(&records, &Timestamp::Y2K);
        assert_eq!(bytes.len(), 2 * SECTOR_SIZE);
        let second_sector_first_len = usize::from(bytes[SECTOR_SIZE]);
        assert_eq!(second_sector_first_len, 160);
        // The tail of sector 1 is zero padding.
        assert!(
            bytes[2 * 34 + 12 * 160..SECTOR_SIZE]
                .iter()
                .all(|&b| b == 0)
        );
    }

    #[test]
    fn empty_directory_takes_one_sector() {
        assert_eq!(extent_len([1, 1]), SECTOR_SIZE);
    }
}
