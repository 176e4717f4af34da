//! Local APIC wiring at boot: LINT0 delivers ExtINT (the legacy PIC), LINT1 delivers NMI, as
//! the MP specification's virtual-wire mode expects.

use kvm_bindings::kvm_lapic_state;

/// Offset of the LVT LINT0 register in the APIC page.
const APIC_LVT0: usize = 0x350;
/// Offset of the LVT LINT1 register in the APIC page.
const APIC_LVT1: usize = 0x360;
/// Offset of the spurious-interrupt vector register.
const APIC_SVR: usize = 0xf0;
/// SVR bit 8: APIC software enable.
const SVR_APIC_ENABLED: u32 = 1 << 8;
/// Offset of the first interrupt request register (eight 32-bit registers, 16 bytes apart).
const APIC_IRR: usize = 0x200;
const DELIVERY_MODE_EXTINT: u32 = 0x7;
const DELIVERY_MODE_NMI: u32 = 0x4;

fn read_reg(state: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| state.regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

fn write_reg(state: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        state.regs[offset + i] = *b as std::os::raw::c_char;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Sets LINT0 to ExtINT and LINT1 to NMI in a LAPIC state read with `KVM_GET_LAPIC`.
pub fn set_virtual_wire(state: &mut kvm_lapic_state) {
    let lvt0 = read_reg(state, APIC_LVT0);
    write_reg(
        state,
        APIC_LVT0,
        with_delivery_mode(lvt0, DELIVERY_MODE_EXTINT),
    );
    let lvt1 = read_reg(state, APIC_LVT1);
    write_reg(
        state,
        APIC_LVT1,
        with_delivery_mode(lvt1, DELIVERY_MODE_NMI),
    );
}

/// Software-enables the APIC (SVR bit 8; spurious vector 0xFF), as a guest kernel does
/// first: a software-disabled LAPIC drops fixed interrupts.
pub fn software_enable(state: &mut kvm_lapic_state) {
    let svr = read_reg(state, APIC_SVR);
    write_reg(state, APIC_SVR, svr | SVR_APIC_ENABLED | 0xff);
}

/// Whether `vector` is pending (requested, not yet delivered) in the IRR of `state`.
pub fn irr_bit(state: &kvm_lapic_state, vector: u8) -> bool {
    let reg = read_reg(state, APIC_IRR + 0x10 * usize::from(vector / 32));
    reg & (1 << (vector % 32)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_pins_get_their_delivery_modes() {
        let mut state = kvm_lapic_state::default();
        write_reg(&mut state, APIC_LVT0, 0x0001_0700);
        set_virtual_wire(&mut state);
        assert_eq!(read_reg(&state, APIC_LVT0), 0x0001_0700);
        assert_eq!((read_reg(&state, APIC_LVT1) >> 8) & 7, DELIVERY_MODE_NMI);
    }

    #[test]
    fn svr_enable_and_irr_bits() {
        let mut state = kvm_lapic_state::default();
        software_enable(&mut state);
        assert_eq!(read_reg(&state, APIC_SVR), 0x1ff);
        write_reg(&mut state, APIC_IRR + 0x20, 1 << 1);
        assert!(irr_bit(&state, 0x41));
        assert!(!irr_bit(&state, 0x40));
        assert!(!irr_bit(&state, 0x21));
    }
}
