//! The part every in-guest virtio-pci driver shares: finding a function on bus 0 through ports
//! 0xCF8/0xCFC, locating its virtio regions through the vendor capabilities, and the modern
//! transport's status/feature/queue handshake.
//!
//! Discovery is the portable kind, so the same driver runs on any VMM: the regions are found
//! in whichever BAR a capability names (32- or 64-bit), memory decoding and bus mastering are
//! switched on (QEMU drops DMA from a function that is not a bus master), and a queue's notify
//! address is `notify base + queue_notify_off * notify_off_multiplier`. Nothing assumes
//! kubevirt-vmm's own layout.
//!
//! Register conventions: R13D holds the slot being probed; after [`PciRoutines::regions`] R8 is
//! the common configuration, R9 the notify base, R10 the notify offset multiplier and R11 the
//! device configuration (0 when absent); the handshake helpers expect the common configuration
//! in RSI.

use iced_x86::IcedError;

use crate::virtio::status;
use iced_x86::code_asm::{
    AsmRegister64, CodeAssembler, CodeLabel, al, ax, byte_ptr, dword_ptr, dx, eax, ebx, ecx, edi,
    esi, ptr, qword_ptr, r8, r9, r10, r10d, r11, r12, r12d, r13d, r15, rax, rbx, rdi, rsi,
    word_ptr,
};

/// Modern virtio-blk (vendor 0x1af4, device 0x1042), as read from config dword 0.
pub const VIRTIO_BLK_PCI_ID: u32 = 0x1042_1af4;
/// Modern virtio-net.
pub const VIRTIO_NET_PCI_ID: u32 = 0x1041_1af4;
/// Modern virtio-console.
pub const VIRTIO_CONSOLE_PCI_ID: u32 = 0x1043_1af4;
/// Modern virtio-rng.
pub const VIRTIO_RNG_PCI_ID: u32 = 0x1044_1af4;

/// Device status bits, as the device side defines them (virtio 1.2, 2.1).
const ACKNOWLEDGE: u32 = status::ACKNOWLEDGE as u32;
const DRIVER: u32 = status::DRIVER as u32;
const FEATURES_OK: u32 = status::FEATURES_OK as u32;
const DRIVER_OK: u32 = status::DRIVER_OK as u32;

/// Common configuration offsets (virtio 1.2, 4.1.4.3).
const DEVICE_FEATURE_SELECT: i32 = 0x00;
const DEVICE_FEATURE: i32 = 0x04;
const DRIVER_FEATURE_SELECT: i32 = 0x08;
const DRIVER_FEATURE: i32 = 0x0c;
const DEVICE_STATUS: i32 = 0x14;
const QUEUE_SELECT: i32 = 0x16;
const QUEUE_SIZE: i32 = 0x18;
const QUEUE_ENABLE: i32 = 0x1c;
const QUEUE_NOTIFY_OFF: i32 = 0x1e;
const QUEUE_DESC: i32 = 0x20;
const QUEUE_DRIVER: i32 = 0x28;
const QUEUE_DEVICE: i32 = 0x30;

/// The labels of the shared subroutines. Create them with [`PciRoutines::new`], `call` them
/// from the program, and place their bodies once with [`PciRoutines::emit`] where execution
/// never falls through (after the program's exit).
#[derive(Clone, Copy, Debug)]
pub struct PciRoutines {
    /// EAX = the config dword at byte offset ESI of bus 0, slot R13D, function 0. Clobbers EDX.
    pub cfg_read: CodeLabel,
    /// The config dword at byte offset ESI of slot R13D = ECX. Clobbers EAX, EDX.
    pub cfg_write: CodeLabel,
    /// For slot R13D: enables memory decoding and bus mastering, walks the vendor
    /// capabilities and sets R8 = common configuration, R9 = notify base, R10 = notify offset
    /// multiplier, R11 = device configuration (each 0 when its capability is missing).
    /// Preserves RBX and R12; clobbers RAX, RCX, RDX, RSI, RDI.
    pub regions: CodeLabel,
    cap_addr: CodeLabel,
}

impl PciRoutines {
    /// New labels for the routines.
    pub fn new(a: &mut CodeAssembler) -> Self {
        PciRoutines {
            cfg_read: a.create_label(),
            cfg_write: a.create_label(),
            regions: a.create_label(),
            cap_addr: a.create_label(),
        }
    }

    /// Places the routines' bodies here.
    pub fn emit(mut self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        let address = |a: &mut CodeAssembler| -> Result<(), IcedError> {
            a.mov(eax, r13d)?;
            a.shl(eax, 11)?;
            a.or(eax, esi)?;
            a.or(eax, 0x8000_0000u32 as i32)?;
            a.mov(dx, 0xcf8u32)?;
            a.out(dx, eax)?;
            a.mov(dx, 0xcfcu32)
        };
        a.set_label(&mut self.cfg_read)?;
        address(a)?;
        a.in_(eax, dx)?;
        a.ret()?;

        a.set_label(&mut self.cfg_write)?;
        address(a)?;
        a.mov(eax, ecx)?;
        a.out(dx, eax)?;
        a.ret()?;

        // cap_addr: RAX = the base of the BAR that the capability at EBX names plus its offset.
        // Clobbers RDX, RSI, RDI, R10 (saved by the caller), R12.
        let mut bar32 = a.create_label();
        a.set_label(&mut self.cap_addr)?;
        a.lea(esi, ptr(rbx + 4))?;
        a.call(self.cfg_read)?;
        a.movzx(edi, al)?;
        a.lea(esi, ptr(rbx + 8))?;
        a.call(self.cfg_read)?;
        a.mov(r12d, eax)?;
        a.lea(esi, ptr(rdi * 4 + 0x10))?;
        a.call(self.cfg_read)?;
        a.mov(r10d, eax)?;
        a.and(r10d, 0xffff_fff0u32 as i32)?;
        a.and(eax, 6)?;
        a.cmp(eax, 4)?;
        a.jne(bar32)?;
        a.lea(esi, ptr(rdi * 4 + 0x14))?;
        a.call(self.cfg_read)?;
        a.shl(rax, 32)?;
        a.or(r10, rax)?;
        a.set_label(&mut bar32)?;
        a.lea(rax, ptr(r10 + r12))?;
        a.ret()?;

        a.set_label(&mut self.regions)?;
        a.push(rbx)?;
        a.push(r12)?;
        // Command register: memory space + bus master; status bits written as 0 stay.
        a.mov(esi, 4u32)?;
        a.call(self.cfg_read)?;
        a.movzx(ecx, ax)?;
        a.or(ecx, 6)?;
        a.mov(esi, 4u32)?;
        a.call(self.cfg_write)?;
        for r in [r8, r9, r11] {
            a.xor(r, r)?;
        }
        // The multiplier lives on the stack while cap_addr uses R10.
        a.push(0)?;
        a.mov(esi, 0x34u32)?;
        a.call(self.cfg_read)?;
        a.movzx(ebx, al)?;
        let mut next = a.create_label();
        let mut done = a.create_label();
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.and(ebx, 0xfc)?;
        a.jz(done)?;
        a.mov(esi, ebx)?;
        a.call(self.cfg_read)?;
        a.mov(ecx, eax)?;
        a.cmp(al, 0x09)?;
        a.jne(next)?;
        a.shr(eax, 24)?;
        for (cfg_type, into) in [(1u32, r8), (2, r9), (4, r11)] {
            let mut other = a.create_label();
            a.cmp(eax, cfg_type)?;
            a.jne(if cfg_type == 4 { next } else { other })?;
            a.call(self.cap_addr)?;
            a.mov(into, rax)?;
            if cfg_type == 2 {
                a.lea(esi, ptr(rbx + 16))?;
                a.call(self.cfg_read)?;
                a.mov(dword_ptr(iced_x86::code_asm::rsp), eax)?;
            }
            a.jmp(next)?;
            if cfg_type != 4 {
                a.set_label(&mut other)?;
            }
        }
        a.set_label(&mut next)?;
        a.mov(ebx, ecx)?;
        a.shr(ebx, 8)?;
        a.jmp(top)?;
        a.set_label(&mut done)?;
        a.pop(r10)?;
        a.pop(r12)?;
        a.pop(rbx)?;
        a.ret()
    }
}

/// Scans bus 0 for the first function whose config dword 0 is `pci_id`: R13D = its slot, or
/// a jump to `missing`. Clobbers EAX, EDX, ESI.
pub fn find_function(
    a: &mut CodeAssembler,
    routines: &PciRoutines,
    pci_id: u32,
    missing: CodeLabel,
) -> Result<(), IcedError> {
    let mut scan = a.create_label();
    let mut found = a.create_label();
    a.xor(r13d, r13d)?;
    a.set_label(&mut scan)?;
    a.xor(esi, esi)?;
    a.call(routines.cfg_read)?;
    a.cmp(eax, pci_id as i32)?;
    a.je(found)?;
    a.inc(r13d)?;
    a.cmp(r13d, 32)?;
    a.jb(scan)?;
    a.jmp(missing)?;
    a.set_label(&mut found)
}

/// With RSI = the common configuration: reset, then ACKNOWLEDGE and DRIVER.
pub fn reset(a: &mut CodeAssembler) -> Result<(), IcedError> {
    for s in [0, ACKNOWLEDGE, ACKNOWLEDGE | DRIVER] {
        a.mov(byte_ptr(rsi + DEVICE_STATUS), s)?;
    }
    Ok(())
}

/// EAX = the device's feature word `word` (0 = bits 0-31, 1 = bits 32-63).
pub fn device_features(a: &mut CodeAssembler, word: u32) -> Result<(), IcedError> {
    a.mov(dword_ptr(rsi + DEVICE_FEATURE_SELECT), word)?;
    a.mov(eax, dword_ptr(rsi + DEVICE_FEATURE))
}

/// Stores the device's 64 feature bits at `[R15 + offset]` (RSI = the common configuration);
/// EAX = bits 0-31.
pub fn store_device_features(a: &mut CodeAssembler, offset: u64) -> Result<(), IcedError> {
    for word in [0u32, 1] {
        device_features(a, word)?;
        a.mov(dword_ptr(r15 + (offset as i32 + 4 * word as i32)), eax)?;
    }
    a.mov(eax, dword_ptr(r15 + offset as i32))
}

/// Accepts EAX as feature bits 0-31 and VERSION_1 alone of bits 32-63, sets FEATURES_OK and
/// reads the status back into EAX: bit 3 (`FEATURES_OK`) is clear if the device refused.
pub fn accept_features(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(dword_ptr(rsi + DRIVER_FEATURE_SELECT), 0u32)?;
    a.mov(dword_ptr(rsi + DRIVER_FEATURE), eax)?;
    a.mov(dword_ptr(rsi + DRIVER_FEATURE_SELECT), 1u32)?;
    a.mov(dword_ptr(rsi + DRIVER_FEATURE), 1u32)?;
    a.mov(
        byte_ptr(rsi + DEVICE_STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK,
    )?;
    a.movzx(eax, byte_ptr(rsi + DEVICE_STATUS))
}

/// Sets up and enables queue `index` with `size` entries: descriptors at `base + offset`, the
/// available ring 0x1000 and the used ring 0x2000 above them; `notify` = the queue's notify
/// address. Clobbers RAX.
pub fn setup_queue(
    a: &mut CodeAssembler,
    index: u32,
    size: u16,
    base: AsmRegister64,
    offset: i32,
    notify: AsmRegister64,
) -> Result<(), IcedError> {
    a.mov(word_ptr(rsi + QUEUE_SELECT), index)?;
    a.mov(word_ptr(rsi + QUEUE_SIZE), u32::from(size))?;
    for (field, ring) in [
        (QUEUE_DESC, 0),
        (QUEUE_DRIVER, 0x1000),
        (QUEUE_DEVICE, 0x2000),
    ] {
        a.lea(rax, ptr(base + (offset + ring)))?;
        a.mov(qword_ptr(rsi + field), rax)?;
    }
    a.movzx(eax, word_ptr(rsi + QUEUE_NOTIFY_OFF))?;
    a.imul_2(eax, r10d)?;
    a.lea(notify, ptr(r9 + rax))?;
    a.mov(word_ptr(rsi + QUEUE_ENABLE), 1u32)
}

/// Sets DRIVER_OK: the device is live.
pub fn driver_ok(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(
        byte_ptr(rsi + DEVICE_STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    )
}

/// Publishes `count` as the available index of the queue whose rings are at `base + offset`
/// (the layout [`setup_queue`] gives), notifies it through `notify` with its index `queue`,
/// and polls until the used index reaches `count`: EAX = the used index. No interrupts.
pub fn kick_and_wait(
    a: &mut CodeAssembler,
    base: AsmRegister64,
    offset: i32,
    notify: AsmRegister64,
    queue: u32,
    count: u32,
) -> Result<(), IcedError> {
    a.mov(word_ptr(base + (offset + 0x1002)), count)?;
    a.mfence()?;
    a.mov(word_ptr(notify), queue)?;
    let mut poll = a.create_label();
    a.set_label(&mut poll)?;
    a.pause()?;
    a.movzx(eax, word_ptr(base + (offset + 0x2002)))?;
    a.cmp(eax, count)?;
    a.jb(poll)
}

/// Zeroes `len` bytes (a multiple of 8) at `addr`. Clobbers RAX, RCX, RDI.
pub fn zero(a: &mut CodeAssembler, addr: u64, len: u32) -> Result<(), IcedError> {
    a.mov(rdi, addr)?;
    a.mov(ecx, len / 8)?;
    a.xor(eax, eax)?;
    a.rep().stosq()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routines_assemble() {
        let mut a = CodeAssembler::new(64).unwrap();
        let r = PciRoutines::new(&mut a);
        let mut missing = a.create_label();
        find_function(&mut a, &r, VIRTIO_BLK_PCI_ID, missing).unwrap();
        a.call(r.regions).unwrap();
        a.mov(rsi, r8).unwrap();
        reset(&mut a).unwrap();
        device_features(&mut a, 0).unwrap();
        accept_features(&mut a).unwrap();
        setup_queue(&mut a, 0, 16, rbx, 0, r12).unwrap();
        driver_ok(&mut a).unwrap();
        kick_and_wait(&mut a, rbx, 0, r12, 0, 1).unwrap();
        a.set_label(&mut missing).unwrap();
        a.hlt().unwrap();
        r.emit(&mut a).unwrap();
        assert!(!a.assemble(0x10_0000).unwrap().is_empty());
    }
}
