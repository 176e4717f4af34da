//! Just enough ACPI to power off and to see the power button, found as an OS finds it: the
//! RSDP in the BIOS area, the XSDT, the FADT's sleep control register and `\_S5_` in the DSDT.

use super::mmio::{r8, r32, r64, w8};

const SLP_EN: u8 = 1 << 5;
/// kubevirt-vmm's Generic Event Device (ACPI0013) event register: reading returns and clears
/// the events since the last read.
const GED_EVENTS: u64 = 0xfef0_0000;
const GED_POWER_BUTTON: u32 = 1;

/// What the FADT says.
#[derive(Clone, Copy)]
pub struct Acpi {
    /// Generic address of the sleep control register: (address space, address).
    sleep_control: (u8, u64),
    /// `\_S5_`'s SLP_TYP.
    s5: u8,
    /// The reset register (address space, address) and the value to write.
    reset: Option<((u8, u64), u8)>,
}

fn checksum_ok(addr: u64, len: u64) -> bool {
    (0..len).fold(0u8, |s, i| s.wrapping_add(r8(addr + i))) == 0
}

fn signature(addr: u64) -> [u8; 4] {
    r32(addr).to_le_bytes()
}

fn rsdp() -> Option<u64> {
    (0xe_0000..0x10_0000u64)
        .step_by(16)
        .find(|&a| r64(a) == u64::from_le_bytes(*b"RSD PTR ") && checksum_ok(a, 20))
}

fn find_table(sig: &[u8; 4]) -> Option<u64> {
    let rsdp = rsdp()?;
    let (root, entry) = if r8(rsdp + 15) >= 2 && r64(rsdp + 24) != 0 {
        (r64(rsdp + 24), 8)
    } else {
        (u64::from(r32(rsdp + 16)), 4)
    };
    let len = u64::from(r32(root + 4));
    if &signature(root)[..] != if entry == 8 { b"XSDT" } else { b"RSDT" } || len > 4096 {
        return None;
    }
    (36..len).step_by(entry as usize).find_map(|off| {
        let t = if entry == 8 {
            r64(root + off)
        } else {
            u64::from(r32(root + off))
        };
        (&signature(t) == sig).then_some(t)
    })
}

/// The byte after `Name(_S5_, Package(){...` : SLP_TYP of S5.
fn s5_sleep_type(dsdt: u64) -> Option<u8> {
    let len = u64::from(r32(dsdt + 4)).min(1 << 20);
    let at = (36..len.saturating_sub(4)).find(|&o| &signature(dsdt + o) == b"_S5_")?;
    let mut p = dsdt + at + 4;
    if r8(p) != 0x12 {
        return None; // PackageOp
    }
    p += 1;
    p += 1 + u64::from(r8(p) >> 6); // PkgLength
    p += 1; // NumElements
    Some(match r8(p) {
        0x0a => r8(p + 1), // BytePrefix
        0x00 => 0,         // ZeroOp
        0x01 => 1,         // OneOp
        v => v,
    })
}

/// A byte to a generic address: system I/O (space 1) or memory.
fn write_register((space, address): (u8, u64), value: u8) {
    match space {
        1 => super::outb(address as u16, value),
        _ => w8(address, value),
    }
}

impl Acpi {
    /// Reads the tables; `None` without ACPI or without a sleep control register.
    pub fn discover() -> Option<Acpi> {
        let fadt = find_table(b"FACP")?;
        if r32(fadt + 4) < 256 {
            return None;
        }
        let sleep_control = (r8(fadt + 244), r64(fadt + 248));
        let dsdt = match r64(fadt + 140) {
            0 => u64::from(r32(fadt + 40)),
            x => x,
        };
        let s5 = s5_sleep_type(dsdt).unwrap_or(5);
        const RESET_REG_SUP: u32 = 1 << 10;
        let reset = (r32(fadt + 112) & RESET_REG_SUP != 0)
            .then(|| ((r8(fadt + 116), r64(fadt + 120)), r8(fadt + 128)));
        (sleep_control.1 != 0).then_some(Acpi {
            sleep_control,
            s5,
            reset,
        })
    }

    /// Whether the power button was pressed since the last call.
    pub fn power_button_pressed(&self) -> bool {
        super::mmio::r32(GED_EVENTS) & GED_POWER_BUTTON != 0
    }

    /// Enters S5. Returns only if the platform ignored it.
    pub fn power_off(&self) {
        write_register(self.sleep_control, (self.s5 << 2) | SLP_EN);
    }

    /// Resets the machine through the FADT's reset register. Returns if there is none.
    pub fn reset(&self) {
        if let Some((register, value)) = self.reset {
            write_register(register, value);
        }
    }
}
