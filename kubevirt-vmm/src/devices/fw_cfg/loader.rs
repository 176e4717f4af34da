//! `etc/table-loader`: the commands firmware runs to place ACPI tables (QEMU's BIOS linker):
//! allocate a file's contents in memory, patch a pointer in one file with another file's
//! address, recompute a checksum. Each command is 128 bytes, little-endian.

use super::FW_CFG_MAX_FILE_PATH;

const COMMAND_SIZE: usize = 128;
const CMD_ALLOCATE: u32 = 1;
const CMD_ADD_POINTER: u32 = 2;
const CMD_ADD_CHECKSUM: u32 = 3;

/// Where firmware allocates a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderZone {
    /// Anywhere in RAM (below 4 GiB).
    High = 1,
    /// The F segment (0xF0000-0xFFFFF), where an OS looks for the RSDP.
    FSeg = 2,
}

/// A table-loader script being written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableLoader {
    bytes: Vec<u8>,
}

fn name_field(name: &str) -> [u8; FW_CFG_MAX_FILE_PATH] {
    let mut f = [0u8; FW_CFG_MAX_FILE_PATH];
    let n = name.len().min(FW_CFG_MAX_FILE_PATH - 1);
    f[..n].copy_from_slice(&name.as_bytes()[..n]);
    f
}

impl TableLoader {
    fn command(&mut self, kind: u32, body: &[u8]) {
        let mut c = [0u8; COMMAND_SIZE];
        c[..4].copy_from_slice(&kind.to_le_bytes());
        c[4..4 + body.len()].copy_from_slice(body);
        self.bytes.extend_from_slice(&c);
    }

    /// Allocates file `name` aligned to `align` bytes in `zone` and copies it there.
    pub fn allocate(&mut self, name: &str, align: u32, zone: LoaderZone) {
        let mut body = name_field(name).to_vec();
        body.extend_from_slice(&align.to_le_bytes());
        body.push(zone as u8);
        self.command(CMD_ALLOCATE, &body);
    }

    /// Adds the address of file `src` to the `size`-byte little-endian value at `offset` in
    /// file `dest`.
    pub fn add_pointer(&mut self, dest: &str, src: &str, offset: u32, size: u8) {
        let mut body = name_field(dest).to_vec();
        body.extend_from_slice(&name_field(src));
        body.extend_from_slice(&offset.to_le_bytes());
        body.push(size);
        self.command(CMD_ADD_POINTER, &body);
    }

    /// Sets the byte at `offset` in `file` so that `[start, start + length)` sums to zero.
    pub fn add_checksum(&mut self, file: &str, offset: u32, start: u32, length: u32) {
        let mut body = name_field(file).to_vec();
        body.extend_from_slice(&offset.to_le_bytes());
        body.extend_from_slice(&start.to_le_bytes());
        body.extend_from_slice(&length.to_le_bytes());
        self.command(CMD_ADD_CHECKSUM, &body);
    }

    /// The script.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_128_bytes_in_qemu_layout() {
        let mut l = TableLoader::default();
        l.allocate("etc/acpi/rsdp", 16, LoaderZone::FSeg);
        l.add_pointer("etc/acpi/rsdp", "etc/acpi/tables", 24, 8);
        l.add_checksum("etc/acpi/rsdp", 8, 0, 20);
        let b = l.into_bytes();
        assert_eq!(b.len(), 3 * 128);
        assert_eq!(&b[..4], &1u32.to_le_bytes());
        assert!(b[4..].starts_with(b"etc/acpi/rsdp\0"));
        assert_eq!(&b[60..64], &16u32.to_le_bytes());
        assert_eq!(b[64], 2);
        let p = &b[128..];
        assert_eq!(&p[..4], &2u32.to_le_bytes());
        assert!(p[60..].starts_with(b"etc/acpi/tables\0"));
        assert_eq!(&p[116..120], &24u32.to_le_bytes());
        assert_eq!(p[120], 8);
        let c = &b[256..];
        assert_eq!(&c[..4], &3u32.to_le_bytes());
        assert_eq!(&c[60..64], &8u32.to_le_bytes());
        assert_eq!(&c[64..68], &0u32.to_le_bytes());
        assert_eq!(&c[68..72], &20u32.to_le_bytes());
    }
}
