//! Volume descriptors (ECMA-119 8): the primary one, the Joliet supplementary one and the set
//! terminator, each one 2048-byte sector starting at sector 16.

use super::SECTOR_SIZE;
use super::directory::{Record, SELF_ID};
use super::encoding::{Timestamp, UNSPECIFIED_DATE, ascii_field, both_u16, both_u32, ucs2_field};
use super::tree::Flavor;

/// The standard identifier every descriptor carries at bytes 1..6.
const STANDARD_ID: &[u8; 5] = b"CD001";

/// Descriptor type: primary volume descriptor.
const TYPE_PRIMARY: u8 = 1;
/// Descriptor type: supplementary volume descriptor (Joliet).
const TYPE_SUPPLEMENTARY: u8 = 2;
/// Descriptor type: volume descriptor set terminator.
const TYPE_TERMINATOR: u8 = 255;

/// Joliet escape sequence for UCS-2 level 3, at byte 88 of the supplementary descriptor.
const JOLIET_LEVEL3_ESCAPE: &[u8; 3] = b"%/E";

/// The system identifier written into both descriptors.
const SYSTEM_ID: &str = "LINUX";

/// The application identifier written into both descriptors.
const APPLICATION_ID: &str = "KUBEVIRT-RS";

/// Where one tree lives, as a volume descriptor points at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLocation {
    /// First sector of the root directory's extent.
    pub root_extent: u32,
    /// Length of the root directory's extent in bytes.
    pub root_size: u32,
    /// Length of the path table in bytes (each copy).
    pub path_table_size: u32,
    /// First sector of the type L path table.
    pub l_table: u32,
    /// First sector of the type M path table.
    pub m_table: u32,
}

/// Everything a primary or Joliet volume descriptor says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeDescriptor<'a> {
    /// Primary or Joliet.
    pub flavor: Flavor,
    /// The volume identifier (label), e.g. `cidata`.
    pub volume_id: &'a str,
    /// Total sectors in the image.
    pub volume_sectors: u32,
    /// The tree this descriptor describes.
    pub tree: TreeLocation,
    /// Creation and modification date.
    pub date: Timestamp,
}

impl VolumeDescriptor<'_> {
    /// The descriptor's sector.
    pub fn to_sector(self) -> [u8; SECTOR_SIZE] {
        let mut s = [0u8; SECTOR_SIZE];
        s[0] = match self.flavor {
            Flavor::Primary => TYPE_PRIMARY,
            Flavor::Joliet => TYPE_SUPPLEMENTARY,
        };
        s[1..6].copy_from_slice(STANDARD_ID);
        s[6] = 1; // version
        self.text(&mut s[8..40], SYSTEM_ID);
        self.text(&mut s[40..72], self.volume_id);
        both_u32(&mut s[80..88], self.volume_sectors);
        if self.flavor == Flavor::Joliet {
            s[88..91].copy_from_slice(JOLIET_LEVEL3_ESCAPE);
        }
        both_u16(&mut s[120..124], 1); // volume set size
        both_u16(&mut s[124..128], 1); // volume sequence number
        // SECTOR_SIZE is 2048, which fits in u16.
        both_u16(&mut s[128..132], SECTOR_SIZE as u16);
        both_u32(&mut s[132..140], self.tree.path_table_size);
        s[140..144].copy_from_slice(&self.tree.l_table.to_le_bytes());
        // 144..148: optional type L path table, none.
        s[148..152].copy_from_slice(&self.tree.m_table.to_be_bytes());
        // 152..156: optional type M path table, none.
        let mut root = Vec::with_capacity(34);
        Record {
            extent: self.tree.root_extent,
            size: self.tree.root_size,
            dir: true,
            id: SELF_ID,
        }
        .write(&mut root, &self.date);
        s[156..190].copy_from_slice(&root);
        self.text(&mut s[190..318], ""); // volume set identifier
        self.text(&mut s[318..446], ""); // publisher identifier
        self.text(&mut s[446..574], ""); // data preparer identifier
        self.text(&mut s[574..702], APPLICATION_ID);
        self.text(&mut s[702..739], ""); // copyright file identifier
        self.text(&mut s[739..776], ""); // abstract file identifier
        self.text(&mut s[776..813], ""); // bibliographic file identifier
        let date = self.date.descriptor_bytes();
        s[813..830].copy_from_slice(&date); // creation
        s[830..847].copy_from_slice(&date); // modification
        s[847..864].copy_from_slice(&UNSPECIFIED_DATE); // expiration
        s[864..881].copy_from_slice(&UNSPECIFIED_DATE); // effective
        s[881] = 1; // file structure version
        s
    }

    fn text(&self, out: &mut [u8], text: &str) {
        match self.flavor {
            Flavor::Primary => ascii_field(out, text),
            Flavor::Joliet => ucs2_field(out, text),
        }
    }
}

/// The volume descriptor set terminator's sector.
pub fn terminator() -> [u8; SECTOR_SIZE] {
    let mut s = [0u8; SECTOR_SIZE];
    s[0] = TYPE_TERMINATOR;
    s[1..6].copy_from_slice(STANDARD_ID);
    s[6] = 1;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(flavor: Flavor) -> [u8; SECTOR_SIZE] {
        VolumeDescriptor {
            flavor,
            volume_id: "cidata",
            volume_sectors: 30,
            tree: TreeLocation {
                root_extent: 23,
                root_size: 2048,
                path_table_size: 10,
                l_table: 19,
                m_table: 20,
            },
            date: Timestamp::Y2K,
        }
        .to_sector()
    }

    #[test]
    fn primary_layout() {
        let s = descriptor(Flavor::Primary);
        assert_eq!(&s[..8], b"\x01CD001\x01\x00");
        assert_eq!(&s[8..13], b"LINUX");
        assert_eq!(&s[40..72], b"cidata                          ");
        assert_eq!(&s[80..88], &[30, 0, 0, 0, 0, 0, 0, 30]);
        assert_eq!(&s[88..91], &[0, 0, 0]);
        assert_eq!(&s[128..132], &[0, 8, 8, 0]);
        assert_eq!(&s[132..140], &[10, 0, 0, 0, 0, 0, 0, 10]);
        assert_eq!(&s[140..144], &[19, 0, 0, 0]);
        assert_eq!(&s[148..152], &[0, 0, 0, 20]);
        assert_eq!(s[156], 34);
        assert_eq!(&s[158..166], &[23, 0, 0, 0, 0, 0, 0, 23]);
        assert_eq!(&s[813..830], b"2000010100000000\0");
        assert_eq!(s[881], 1);
        assert!(s[883..].iter().all(|&b| b == 0));
    }

    #[test]
    fn joliet_layout() {
        let s = descriptor(Flavor::Joliet);
        assert_eq!(&s[..7], b"\x02CD001\x01");
        assert_eq!(&s[40..52], b"\0c\0i\0d\0a\0t\0a");
        assert_eq!(&s[52..54], b"\0 ");
        assert_eq!(&s[88..91], b"%/E");
    }

    #[test]
    fn terminator_layout() {
        let s = terminator();
        assert_eq!(&s[..7], b"\xffCD001\x01");
        assert!(s[7..].iter().all(|&b| b == 0));
    }
}
