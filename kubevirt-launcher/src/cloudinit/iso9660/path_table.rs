//! Path tables (ECMA-119 9.4): every directory once, in breadth-first order, with its first
//! sector and its parent's number. Each tree has two copies, type L (little-endian numbers)
//! and type M (big-endian numbers).

/// Byte order of a path table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Type L: little-endian.
    Little,
    /// Type M: big-endian.
    Big,
}

/// One directory's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathEntry<'a> {
    /// Directory identifier; `[0]` for the root.
    pub id: &'a [u8],
    /// First sector of the directory's extent.
    pub extent: u32,
    /// 1-based number of the parent directory in the table (the root's parent is 1).
    pub parent: u16,
}

/// Length of an entry with an identifier of `id_len` bytes: 8 fixed bytes, the identifier and
/// a pad byte when the identifier's length is odd (ECMA-119 9.4.7).
pub fn entry_len(id_len: usize) -> usize {
    8 + id_len + id_len % 2
}

/// The path table of `entries`, which must already be in breadth-first order with parents
/// numbered before their children. Its length is the "path table size" of the volume
/// descriptor.
pub fn write(entries: &[PathEntry<'_>], endian: Endian) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| entry_len(e.id.len())).sum());
    for entry in entries {
        // Identifiers are at most 128 bytes, so the length fits a byte.
        out.push(u8::try_from(entry.id.len()).unwrap_or(u8::MAX));
        out.push(0); // extended attribute record length
        match endian {
            Endian::Little => {
                out.extend_from_slice(&entry.extent.to_le_bytes());
                out.extend_from_slice(&entry.parent.to_le_bytes());
            }
            Endian::Big => {
                out.extend_from_slice(&entry.extent.to_be_bytes());
                out.extend_from_slice(&entry.parent.to_be_bytes());
            }
        }
        out.extend_from_slice(entry.id);
        if entry.id.len() % 2 == 1 {
            out.push(0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRIES: [PathEntry<'static>; 2] = [
        PathEntry {
            id: &[0],
            extent: 23,
            parent: 1,
        },
        PathEntry {
            id: b"OPENSTACK",
            extent: 0x0102_0304,
            parent: 1,
        },
    ];

    #[test]
    fn little_endian_table() {
        let bytes = write(&ENTRIES, Endian::Little);
        assert_eq!(bytes.len(), entry_len(1) + entry_len(9));
        assert_eq!(&bytes[..10], &[1, 0, 23, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&bytes[10..18], &[9, 0, 4, 3, 2, 1, 1, 0]);
        assert_eq!(&bytes[18..27], b"OPENSTACK");
        assert_eq!(bytes[27], 0);
    }

    #[test]
    fn big_endian_table() {
        let bytes = write(&ENTRIES, Endian::Big);
        assert_eq!(&bytes[..10], &[1, 0, 0, 0, 0, 23, 0, 1, 0, 0]);
        assert_eq!(&bytes[10..18], &[9, 0, 1, 2, 3, 4, 0, 1]);
    }

    #[test]
    fn even_identifiers_are_not_padded() {
        assert_eq!(entry_len(12), 20);
        assert_eq!(entry_len(1), 10);
    }
}
