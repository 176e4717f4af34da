//! A small ISO 9660 (ECMA-119) image writer with the Joliet extension, enough for cloud-init's
//! `cidata` and `config-2` disks.
//!
//! The image holds two directory trees over the same file contents: the primary one, with
//! upper-case 8-bit names as plain ISO 9660 readers expect, and the Joliet one, with the names
//! as given (lower case, dashes) in UCS-2 big-endian, which Linux, blkid and cloud-init use.
//!
//! Layout, in 2048-byte sectors: 0..16 system area (zeros), 16 primary volume descriptor,
//! 17 Joliet supplementary volume descriptor, 18 terminator, then the type L and type M path
//! tables of each tree, each tree's directories in path table order, and the file contents.
//! Nothing depends on the clock or on hash order: the same input gives the same bytes.

mod descriptor;
mod directory;
mod encoding;
mod layout;
mod path_table;
mod tree;

pub use encoding::Timestamp;

use descriptor::{TreeLocation, VolumeDescriptor, terminator};
use layout::{FIRST_DESCRIPTOR, Layout, TreeLayout};
use path_table::Endian;
use tree::Tree;

/// Bytes per logical sector and per logical block.
pub const SECTOR_SIZE: usize = 2048;

/// The longest volume identifier: 32 bytes of UCS-2 in the Joliet descriptor.
pub const MAX_VOLUME_ID_CHARS: usize = 16;

/// What can make an image impossible to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsoError {
    /// A path component Joliet cannot hold.
    #[error("file path {path:?}: {reason}")]
    InvalidName {
        /// The whole path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More directory levels than ISO 9660 allows.
    #[error("file path {path:?}: more than 8 directory levels (the root counts as one)")]
    TooDeep {
        /// The whole path.
        path: String,
    },
    /// The same path twice, or a path that is both a file and a directory.
    #[error("file path {path:?}: given twice, or both as a file and as a directory")]
    Conflict {
        /// The path given second.
        path: String,
    },
    /// A volume identifier that is empty, too long or not printable ASCII.
    #[error("volume identifier {0:?}: must be 1 to 16 printable ASCII characters")]
    InvalidVolumeId(String),
    /// A date the descriptor fields cannot hold.
    #[error("timestamp {0:?}: out of range (years 1900 to 2155)")]
    InvalidTimestamp(Timestamp),
    /// A file of 4 GiB or more, or an image past the 32-bit sector count.
    #[error("the image does not fit ISO 9660's 32-bit sizes (files under 4 GiB each)")]
    TooLarge,
}

/// One file of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoFile {
    /// `/`-separated path from the root, without a leading `/`, e.g. `openstack/latest/user_data`.
    /// Directories on the way are created.
    pub path: String,
    /// The content.
    pub data: Vec<u8>,
}

impl IsoFile {
    /// A file at `path` holding `data`.
    pub fn new(path: impl Into<String>, data: impl Into<Vec<u8>>) -> IsoFile {
        IsoFile {
            path: path.into(),
            data: data.into(),
        }
    }
}

/// An image to write: a volume identifier, a date and files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoImage {
    /// The volume identifier (the filesystem label), e.g. `cidata`.
    pub volume_id: String,
    /// Written into every date field.
    pub date: Timestamp,
    /// The files, in any order.
    pub files: Vec<IsoFile>,
}

impl IsoImage {
    /// An empty image labelled `volume_id`, dated [`Timestamp::Y2K`].
    pub fn new(volume_id: impl Into<String>) -> IsoImage {
        IsoImage {
            volume_id: volume_id.into(),
            date: Timestamp::Y2K,
            files: Vec::new(),
        }
    }

    /// Adds a file.
    pub fn with_file(mut self, path: impl Into<String>, data: impl Into<Vec<u8>>) -> IsoImage {
        self.files.push(IsoFile::new(path, data));
        self
    }

    /// The image's bytes: a whole number of sectors.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IsoError> {
        check_volume_id(&self.volume_id)?;
        if !self.date.is_valid() {
            return Err(IsoError::InvalidTimestamp(self.date));
        }
        let tree = Tree::from_paths(self.files.iter().map(|f| f.path.as_str()))?;
        let lens: Vec<usize> = self.files.iter().map(|f| f.data.len()).collect();
        let layout = Layout::new(&tree, &lens).ok_or(IsoError::TooLarge)?;
        let total = usize::try_from(layout.sectors)
            .ok()
            .and_then(|s| s.checked_mul(SECTOR_SIZE))
            .ok_or(IsoError::TooLarge)?;
        let mut image = vec![0u8; total];

        let first = FIRST_DESCRIPTOR as usize;
        for (i, t) in [&layout.primary, &layout.joliet].into_iter().enumerate() {
            let sector = self.descriptor(t, layout.sectors).to_sector();
            put(&mut image, first + i, &sector);
        }
        put(&mut image, first + 2, &terminator());

        for t in [&layout.primary, &layout.joliet] {
            put(
                &mut image,
                t.l_table as usize,
                &t.path_table(&tree, Endian::Little),
            );
            put(
                &mut image,
                t.m_table as usize,
                &t.path_table(&tree, Endian::Big),
            );
            for (extent, bytes) in t.directories(&tree, &layout.files, &self.date) {
                put(&mut image, extent as usize, &bytes);
            }
        }
        for (file, &(extent, _)) in self.files.iter().zip(&layout.files) {
            if !file.data.is_empty() {
                put(&mut image, extent as usize, &file.data);
            }
        }
        Ok(image)
    }

    fn descriptor(&self, t: &TreeLayout, sectors: u32) -> VolumeDescriptor<'_> {
        let (root_extent, root_size) = t.root();
        VolumeDescriptor {
            flavor: t.flavor,
            volume_id: &self.volume_id,
            volume_sectors: sectors,
            tree: TreeLocation {
                root_extent,
                root_size,
                // Bounded by 65535 directories of at most 136 bytes each.
                path_table_size: u32::try_from(t.path_table_size()).unwrap_or(u32::MAX),
                l_table: t.l_table,
                m_table: t.m_table,
            },
            date: self.date,
        }
    }
}

/// Copies `bytes` into `image` at the start of `sector`. The layout sized the image for it.
fn put(image: &mut [u8], sector: usize, bytes: &[u8]) {
    let start = sector * SECTOR_SIZE;
    image[start..start + bytes.len()].copy_from_slice(bytes);
}

/// Checks a volume identifier fits both descriptors.
fn check_volume_id(id: &str) -> Result<(), IsoError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_VOLUME_ID_CHARS
        && id.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok {
        Ok(())
    } else {
        Err(IsoError::InvalidVolumeId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_image_layout() {
        let image = IsoImage::new("cidata")
            .with_file("meta-data", "instance-id: a\n")
            .to_bytes()
            .unwrap();
        // 16 system sectors, 3 descriptors, 4 path tables, 2 root directories, 1 file.
        assert_eq!(image.len(), 26 * SECTOR_SIZE);
        assert!(image[..16 * SECTOR_SIZE].iter().all(|&b| b == 0));
        assert_eq!(&image[16 * SECTOR_SIZE..16 * SECTOR_SIZE + 6], b"\x01CD001");
        assert_eq!(&image[17 * SECTOR_SIZE..17 * SECTOR_SIZE + 6], b"\x02CD001");
        assert_eq!(&image[18 * SECTOR_SIZE..18 * SECTOR_SIZE + 6], b"\xffCD001");
        assert_eq!(
            &image[25 * SECTOR_SIZE..25 * SECTOR_SIZE + 15],
            b"instance-id: a\n"
        );
        // The Joliet root (sector 24) names the file in UCS-2.
        let root = &image[24 * SECTOR_SIZE..25 * SECTOR_SIZE];
        let record = &root[68..];
        assert_eq!(usize::from(record[32]), 18);
        assert_eq!(&record[33..51], b"\0m\0e\0t\0a\0-\0d\0a\0t\0a");
    }

    #[test]
    fn output_is_deterministic() {
        let build = || {
            IsoImage::new("config-2")
                .with_file("openstack/latest/user_data", "#cloud-config\n")
                .with_file("openstack/latest/meta_data.json", "{}")
                .to_bytes()
                .unwrap()
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn volume_id_is_checked() {
        for bad in ["", "seventeen-chars-x", "tab\there", "é"] {
            assert_eq!(
                IsoImage::new(bad).to_bytes(),
                Err(IsoError::InvalidVolumeId(bad.to_owned()))
            );
        }
    }

    #[test]
    fn timestamp_is_checked() {
        let mut image = IsoImage::new("cidata");
        image.date.month = 0;
        assert!(matches!(
            image.to_bytes(),
            Err(IsoError::InvalidTimestamp(_))
        ));
    }
}
