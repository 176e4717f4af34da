//! The hostile guest for a VMM that writes it no parameters — a `kubevirt-launcher` booting it
//! as a PVH kernel (`elf::pvh_elf`): it finds its targets itself and hammers forever.
//!
//! Before the loop of [`super::hostile`] it writes the parameters that loop reads: the seed,
//! no end, the scratch area (the upper half of the `memory` it was built for) and the targets —
//! kubevirt-vmm's standard port devices but COM1 and those that end the VM (i8042 data port,
//! CMOS, fw_cfg, PCI configuration ports, the ACPI GED), and what it finds on PCI bus 0
//! through ECAM: each present function's configuration space and its BAR 0 (virtio's common,
//! ISR, device and notify regions, not the MSI-X table), every virtio function also set up
//! driver-like now and then. It first prints on COM1 a letter per target it found (`p` a port
//! range, `g` the GED, `c` a PCI function's configuration space, `b` its BAR 0, `v` a virtio
//! function set up now and then) and a newline; then its heartbeat is a `.` every
//! [`super::hostile::REPORT_EVERY`] operations, so a test watches both on the console.

use iced_x86::code_asm::{
    CodeAssembler, al, dword_ptr, dx, eax, edx, esi, qword_ptr, r8, r11, r12, r13d, rax, rbx, rcx,
    rdi, rdx,
};

use super::hostile::{Beat, MAX_VIRTIO, MMIO, PARAMS, TARGETS, VIRTIO_BARS, hammer};
use super::{GuestAsm, SERIAL_PORT, TestGuest, TestGuestError};
use crate::acpi::ged::GED_MMIO_ADDR;
use crate::devices::cmos::{CMOS_INDEX_PORT, CMOS_PORT_SPAN};
use crate::devices::fw_cfg::{FW_CFG_PORT_SPAN, FW_CFG_SELECTOR_PORT};
use crate::devices::i8042::I8042_DATA_PORT;
use crate::pci::PCI_MMCONFIG_START;
use crate::virtio::pci::{MSIX_TABLE_OFFSET, VIRTIO_PCI_VENDOR};

/// The port ranges hammered: `(base, len)`. The i8042's command port (0x64, whose commands
/// reset the machine) is left out, as are COM1 (the heartbeat) and the ACPI sleep and reset
/// registers.
const PORTS: [(u64, u64); 4] = [
    (I8042_DATA_PORT as u64, 4),
    (CMOS_INDEX_PORT as u64, CMOS_PORT_SPAN),
    (FW_CFG_SELECTOR_PORT as u64, FW_CFG_PORT_SPAN),
    (0xcf8, 8),
];

/// The hostile guest seeded with `seed`, for a VM of `memory` bytes of RAM (at least 8 MiB:
/// the scratch area is its upper half).
pub fn hostile_standalone(seed: u64, memory: u64) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("hostile_standalone")?;
    let r = discover(g.a(), seed, memory).and_then(|()| hammer(g.a(), Beat::Serial));
    g.check(r)?;
    g.exit(0)?;
    g.finish()
}

/// Writes the parameters at [`PARAMS`].
fn discover(a: &mut CodeAssembler, seed: u64, memory: u64) -> Result<(), iced_x86::IcedError> {
    let scratch = memory / 2;
    a.mov(rdi, PARAMS)?;
    for (offset, value) in [
        (0, seed | 1),
        (8, u64::MAX),
        (24, scratch),
        // The largest power of two that fits, minus one: offsets stay inside RAM.
        (32, (1u64 << (63 - scratch.leading_zeros())) - 1),
        (40, memory),
    ] {
        a.mov(rax, value)?;
        a.mov(qword_ptr(rdi + offset), rax)?;
    }
    // rbx: the next target, r8: targets; rcx: the next virtio BAR, r11: virtio functions.
    a.mov(rbx, TARGETS)?;
    a.mov(rcx, VIRTIO_BARS)?;
    a.xor(r8, r8)?;
    a.xor(r11, r11)?;
    let add = |a: &mut CodeAssembler, len: u64, letter: u8| -> Result<(), iced_x86::IcedError> {
        // The target at rax, `len` bytes long; `letter` on COM1 says what it is.
        a.mov(qword_ptr(rbx), rax)?;
        a.mov(rax, len)?;
        a.mov(qword_ptr(rbx + 8), rax)?;
        a.add(rbx, 16)?;
        a.inc(r8)?;
        print(a, letter)
    };
    for (base, len) in PORTS {
        a.mov(rax, base)?;
        add(a, len, b'p')?;
    }
    a.mov(rax, GED_MMIO_ADDR)?;
    add(a, 16 | MMIO, b'g')?;
    // Bus 0 through ECAM: r12 the function's configuration space, r13d the slot.
    a.mov(r12, PCI_MMCONFIG_START)?;
    a.xor(r13d, r13d)?;
    let (mut slot, mut next_slot) = (a.create_label(), a.create_label());
    a.set_label(&mut slot)?;
    a.mov(esi, dword_ptr(r12))?;
    a.cmp(esi, -1)?;
    a.je(next_slot)?;
    a.mov(rax, r12)?;
    add(a, 0x1000 | MMIO, b'c')?;
    // A memory BAR 0 (64-bit or not) placed somewhere: its registers up to the MSI-X table.
    a.mov(eax, dword_ptr(r12 + 0x10))?;
    a.test(eax, 1)?;
    a.jnz(next_slot)?;
    a.mov(edx, eax)?;
    a.and(edx, -16i32)?;
    a.jz(next_slot)?;
    let mut low = a.create_label();
    a.and(eax, 6)?;
    a.cmp(eax, 4)?;
    a.jne(low)?;
    a.mov(eax, dword_ptr(r12 + 0x14))?;
    a.shl(rax, 32)?;
    a.or(rdx, rax)?;
    a.set_label(&mut low)?;
    a.mov(rax, rdx)?;
    add(a, MSIX_TABLE_OFFSET | MMIO, b'b')?;
    // A virtio function's BAR 0 also goes to the driver-like set-up.
    a.and(esi, 0xffff)?;
    a.cmp(esi, u32::from(VIRTIO_PCI_VENDOR))?;
    a.jne(next_slot)?;
    a.cmp(r11, MAX_VIRTIO as i32)?;
    a.jae(next_slot)?;
    a.mov(qword_ptr(rcx), rdx)?;
    a.add(rcx, 8)?;
    a.inc(r11)?;
    print(a, b'v')?;
    a.set_label(&mut next_slot)?;
    a.add(r12, 1 << 15)?;
    a.inc(r13d)?;
    a.cmp(r13d, 32)?;
    a.jb(slot)?;
    print(a, b'\n')?;
    a.mov(rdi, PARAMS)?;
    a.mov(qword_ptr(rdi + 16), r8)?;
    a.mov(qword_ptr(rdi + 48), r11)
}

/// `letter` on COM1; keeps every register.
fn print(a: &mut CodeAssembler, letter: u8) -> Result<(), iced_x86::IcedError> {
    a.push(rax)?;
    a.push(rdx)?;
    a.mov(dx, u32::from(SERIAL_PORT))?;
    a.mov(al, u32::from(letter))?;
    a.out(dx, al)?;
    a.pop(rdx)?;
    a.pop(rax)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_assembles() {
        assert!(!hostile_standalone(1, 16 << 20).unwrap().code.is_empty());
    }
}
