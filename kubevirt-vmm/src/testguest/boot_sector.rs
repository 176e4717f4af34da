//! A BIOS boot sector for firmware tests: 16-bit real-mode code that prints a line on COM1
//! and ends the VM, so a test sees that firmware loaded it from the disk and jumped to it. It
//! ends the VM twice over: through the debug-exit port (this VMM with
//! `VmConfig::with_debug_exit`, QEMU's `isa-debug-exit` at 0xF4) and, where that port is
//! absent (a VMI run by the launcher), by entering ACPI S5 through this VMM's sleep control
//! register (port 0x600), which powers the VM off.

/// The line the boot sector prints (then CR LF).
pub const BOOT_SECTOR_LINE: &str = "kubevirt-rs: hello from the boot sector";

/// Offset of the message in the sector.
const MESSAGE_AT: usize = 34;

/// A 512-byte boot sector (signature 0x55AA) that writes `line` and CR LF to COM1, then
/// `exit_code` to the debug-exit port, then S5 to the ACPI sleep control register, then halts.
///
/// # Panics
/// When `line` does not fit in the sector.
pub fn boot_sector(line: &str, exit_code: u8) -> [u8; 512] {
    let addr = (0x7c00 + MESSAGE_AT) as u16;
    let code: Vec<u8> = [
        &[0xfa][..],   // cli
        &[0x31, 0xc0], // xor ax, ax
        &[0x8e, 0xd8], // mov ds, ax
        &[0xbe],       // mov si, message
        &addr.to_le_bytes(),
        &[0xba, 0xf8, 0x03], // mov dx, 0x3f8
        &[0xac],             // next: lodsb
        &[0x84, 0xc0],       // test al, al
        &[0x74, 0x03],       // jz done
        &[0xee],             // out dx, al
        &[0xeb, 0xf8],       // jmp next
        &[0xb0, exit_code],  // done: mov al, exit_code
        &[0xba, 0xf4, 0x00], // mov dx, 0xf4
        &[0xee],             // out dx, al
        &[0xb0, 0x34],       // mov al, SLP_TYP(5) << 2 | SLP_EN
        &[0xba, 0x00, 0x06], // mov dx, 0x600
        &[0xee],             // out dx, al
        &[0xf4],             // hlt
        &[0xeb, 0xfd],       // jmp hlt
    ]
    .concat();
    assert_eq!(code.len(), MESSAGE_AT);
    let mut sector = [0u8; 512];
    sector[..MESSAGE_AT].copy_from_slice(&code);
    let text = format!("{line}\r\n");
    assert!(
        MESSAGE_AT + text.len() < 510,
        "the line does not fit in a boot sector"
    );
    sector[MESSAGE_AT..MESSAGE_AT + text.len()].copy_from_slice(text.as_bytes());
    sector[510] = 0x55;
    sector[511] = 0xaa;
    sector
}

/// A raw disk image of `size` bytes (a multiple of 512) with [`boot_sector`] first.
pub fn boot_disk(line: &str, exit_code: u8, size: usize) -> Vec<u8> {
    let mut disk = vec![0u8; size.max(512)];
    disk[..512].copy_from_slice(&boot_sector(line, exit_code));
    disk
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sector_is_signed_and_holds_the_line() {
        let s = boot_sector(BOOT_SECTOR_LINE, 0x31);
        assert_eq!(s[510..], [0x55, 0xaa]);
        assert!(s[MESSAGE_AT..].starts_with(BOOT_SECTOR_LINE.as_bytes()));
        assert_eq!(s[20], 0x31);
    }
}
