//! What the device serves: fixed items by key and named files, frozen into a table the
//! device reads from.

use std::collections::BTreeMap;

use super::{
    FW_CFG_BOOT_MENU, FW_CFG_FILE_DIR, FW_CFG_FILE_FIRST, FW_CFG_ID, FW_CFG_MAX_CPUS,
    FW_CFG_MAX_FILE_PATH, FW_CFG_NB_CPUS, FW_CFG_NOGRAPHIC, FW_CFG_RAM_SIZE, FW_CFG_SIGNATURE,
    FW_CFG_UUID,
};

/// Interface ID bits: the traditional port interface and DMA.
const ID_TRADITIONAL: u32 = 1 << 0;
const ID_DMA: u32 = 1 << 1;

/// Errors adding files.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    /// The name does not fit the directory's 56-byte field (or is empty).
    #[error("fw_cfg file name {0:?} must be 1 to 55 bytes")]
    NameLength(String),
    /// Two files with one name.
    #[error("fw_cfg file {0:?} is added twice")]
    Duplicate(String),
    /// More files than keys.
    #[error("too many fw_cfg files")]
    TooMany,
    /// A file larger than the directory's 32-bit size field.
    #[error("fw_cfg file {0:?} is larger than 4 GiB")]
    TooLarge(String),
}

/// The items and files of one VM's fw_cfg.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FwCfgItems {
    fixed: BTreeMap<u16, Vec<u8>>,
    files: BTreeMap<String, Vec<u8>>,
}

impl FwCfgItems {
    /// The items every VM has: signature, interface ID (with DMA), RAM size, vCPU counts, no
    /// graphics and no boot menu. `uuid` in SMBIOS byte order is the system UUID (zeros: none).
    pub fn new(ram_size: u64, vcpus: u16, uuid: [u8; 16]) -> Self {
        let mut items = FwCfgItems::default();
        items.set(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        items.set(FW_CFG_ID, (ID_TRADITIONAL | ID_DMA).to_le_bytes().to_vec());
        items.set(FW_CFG_UUID, uuid.to_vec());
        items.set(FW_CFG_RAM_SIZE, ram_size.to_le_bytes().to_vec());
        items.set(FW_CFG_NOGRAPHIC, 1u16.to_le_bytes().to_vec());
        items.set(FW_CFG_NB_CPUS, vcpus.to_le_bytes().to_vec());
        items.set(FW_CFG_MAX_CPUS, vcpus.to_le_bytes().to_vec());
        items.set(FW_CFG_BOOT_MENU, 0u16.to_le_bytes().to_vec());
        items
    }

    /// Sets the item with a fixed `key` (below [`FW_CFG_FILE_DIR`]'s range of file keys).
    pub fn set(&mut self, key: u16, data: Vec<u8>) {
        self.fixed.insert(key, data);
    }

    /// Adds file `name`.
    ///
    /// # Errors
    /// [`FwCfgError`] for a name that is empty or too long, taken, or a file over 4 GiB.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        if name.is_empty() || name.len() >= FW_CFG_MAX_FILE_PATH {
            return Err(FwCfgError::NameLength(name.into()));
        }
        if self.files.contains_key(name) {
            return Err(FwCfgError::Duplicate(name.into()));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::TooLarge(name.into()));
        }
        if self.files.len() >= usize::from(u16::MAX - FW_CFG_FILE_FIRST) {
            return Err(FwCfgError::TooMany);
        }
        self.files.insert(name.into(), data);
        Ok(())
    }

    /// The file `name`, if added.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// Every item by key: the fixed ones, the directory and the files (sorted by name, keys
    /// from [`FW_CFG_FILE_FIRST`]).
    pub fn freeze(&self) -> BTreeMap<u16, Vec<u8>> {
        let mut out = self.fixed.clone();
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (i, (name, data)) in self.files.iter().enumerate() {
            let key = FW_CFG_FILE_FIRST + i as u16;
            dir.extend_from_slice(&(data.len() as u32).to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FW_CFG_MAX_FILE_PATH];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&field);
            out.insert(key, data.clone());
        }
        out.insert(FW_CFG_FILE_DIR, dir);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_lists_files_sorted_with_their_keys_and_sizes() {
        let mut items = FwCfgItems::new(64 << 20, 2, [0; 16]);
        items.add_file("etc/e820", vec![1; 20]).unwrap();
        items.add_file("bootorder", b"/pci@i0cf8/x@1\n".to_vec()).unwrap();
        let all = items.freeze();
        let dir = &all[&FW_CFG_FILE_DIR];
        assert_eq!(u32::from_be_bytes(dir[..4].try_into().unwrap()), 2);
        assert_eq!(dir.len(), 4 + 2 * 64);
        // "bootorder" sorts first: key 0x20, 15 bytes.
        assert_eq!(&dir[4..8], &15u32.to_be_bytes());
        assert_eq!(&dir[8..10], &0x20u16.to_be_bytes());
        assert!(dir[12..].starts_with(b"bootorder\0"));
        assert_eq!(&dir[68..72], &20u32.to_be_bytes());
        assert_eq!(&dir[72..74], &0x21u16.to_be_bytes());
        assert_eq!(all[&0x21], vec![1; 20]);
        assert_eq!(all[&FW_CFG_SIGNATURE], b"QEMU");
        assert_eq!(all[&FW_CFG_NB_CPUS], vec![2, 0]);
    }

    #[test]
    fn bad_names_and_duplicates_are_refused() {
        let mut items = FwCfgItems::default();
        assert!(matches!(items.add_file("", vec![]), Err(FwCfgError::NameLength(_))));
        let long = "x".repeat(56);
        assert!(matches!(items.add_file(&long, vec![]), Err(FwCfgError::NameLength(_))));
        items.add_file("a", vec![]).unwrap();
        assert_eq!(items.add_file("a", vec![]), Err(FwCfgError::Duplicate("a".into())));
    }
}
