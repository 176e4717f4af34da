//! A type-0 PCI configuration space: registers with per-bit write masks, BARs that answer the
//! sizing protocol, and a capability list.

use super::PciError;

/// Dwords in a PCIe (extended) configuration space: 4 KiB.
pub const CONFIG_SPACE_DWORDS: usize = 1024;
/// Dwords reachable through the legacy 0xCF8/0xCFC mechanism: 256 bytes.
pub const LEGACY_CONFIG_DWORDS: usize = 64;
/// Number of BAR registers in a type-0 header.
pub const NUM_BARS: usize = 6;

const COMMAND_REG: usize = 1;
const BAR0_REG: usize = 4;
const CAPABILITY_POINTER_REG: usize = 13;
const INTERRUPT_LINE_REG: usize = 15;
const FIRST_CAPABILITY_OFFSET: usize = 0x40;
const STATUS_CAPABILITIES_LIST: u32 = 1 << 20;

/// Command register: the device decodes its memory BARs.
pub const COMMAND_MEMORY_SPACE: u16 = 1 << 1;
/// Command register: the device may master the bus (DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command bits a guest may change: I/O, memory, bus master, INTx disable.
const COMMAND_WRITABLE: u32 = 0x0407;

const BAR_MEM_64BIT: u32 = 0b100;
const BAR_PREFETCHABLE: u32 = 0b1000;

/// What a device's identity registers say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIds {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Revision.
    pub revision: u8,
    /// Class, subclass and programming interface (24 bits).
    pub class: u32,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

/// A memory BAR the device asks for; the VMM chooses its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRequest {
    /// Size in bytes: a power of two, at least 16.
    pub size: u64,
    /// A 64-bit BAR (takes two registers).
    pub is_64bit: bool,
    /// Prefetchable memory.
    pub prefetchable: bool,
}

#[derive(Clone, Copy, Debug)]
struct Bar {
    size: u64,
    is_64bit: bool,
}

/// A type-0 configuration space.
#[derive(Clone, Debug)]
pub struct PciConfiguration {
    registers: Vec<u32>,
    writable: Vec<u32>,
    bars: [Option<Bar>; NUM_BARS],
    last_capability: Option<usize>,
    next_capability: usize,
}

impl PciConfiguration {
    /// A header with `ids`, no BARs and no capabilities.
    pub fn new(ids: PciIds) -> Self {
        let mut registers = vec![0u32; CONFIG_SPACE_DWORDS];
        let mut writable = vec![0u32; CONFIG_SPACE_DWORDS];
        registers[0] = u32::from(ids.device) << 16 | u32::from(ids.vendor);
        registers[2] = (ids.class & 0x00ff_ffff) << 8 | u32::from(ids.revision);
        registers[11] = u32::from(ids.subsystem) << 16 | u32::from(ids.subsystem_vendor);
        writable[COMMAND_REG] = COMMAND_WRITABLE;
        // Cache line size and latency timer are plain read/write bytes; the header type is 0.
        writable[3] = 0x0000_ffff;
        // Interrupt line is scratch for the OS; the pin stays 0 (no INTx).
        writable[INTERRUPT_LINE_REG] = 0xff;
        PciConfiguration {
            registers,
            writable,
            bars: [None; NUM_BARS],
            last_capability: None,
            next_capability: FIRST_CAPABILITY_OFFSET,
        }
    }

    /// Appends the registers to a snapshot (the write masks, BAR sizes and capabilities are
    /// the device's construction and come back with it).
    pub(crate) fn save(&self, e: &mut crate::snapshot::codec::Encoder) {
        e.len(self.registers.len());
        for r in &self.registers {
            e.u32(*r);
        }
    }

    /// Puts back registers [`PciConfiguration::save`] wrote.
    pub(crate) fn restore(
        &mut self,
        d: &mut crate::snapshot::codec::Decoder<'_>,
    ) -> Result<(), crate::snapshot::CodecError> {
        use crate::snapshot::codec::field;
        let n = d.len(self.registers.len(), &field("configuration space dwords"))?;
        if n != self.registers.len() {
            return Err(crate::snapshot::CodecError::Inconsistent(format!(
                "the configuration space has {n} dwords, the device {}",
                self.registers.len()
            )));
        }
        for i in 0..n {
            self.registers[i] = d.u32(&|| format!("configuration dword {i}"))?;
        }
        Ok(())
    }

    /// The register at dword index `reg`; out-of-range registers read as 0.
    pub fn read_reg(&self, reg: usize) -> u32 {
        self.registers.get(reg).copied().unwrap_or(0)
    }

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` of register `reg`, changing only
    /// writable bits. Accesses that are misaligned or cross the register are ignored.
    pub fn write_reg(&mut self, reg: usize, offset: u64, data: &[u8]) {
        let Some(mask) = access_mask(offset, data.len()) else {
            return;
        };
        let (Some(old), Some(&writable)) = (self.registers.get(reg), self.writable.get(reg)) else {
            return;
        };
        let mut value = [0u8; 4];
        value[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        let value = u32::from_le_bytes(value);
        let changing = mask & writable;
        self.registers[reg] = (old & !changing) | (value & changing);
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.registers[COMMAND_REG] as u16
    }

    /// Declares BAR `index` as `request` (memory space, address 0 until [`Self::set_bar_address`]).
    pub fn add_bar(&mut self, index: usize, request: BarRequest) -> Result<(), PciError> {
        let last = index + usize::from(request.is_64bit);
        if last >= NUM_BARS || self.bars[index].is_some() || self.bars[last].is_some() {
            return Err(PciError::BarSlot { index });
        }
        if !request.size.is_power_of_two()
            || request.size < 16
            || (!request.is_64bit && request.size > 1 << 31)
        {
            return Err(PciError::BarSize {
                index,
                size: request.size,
            });
        }
        let mut flags = 0;
        if request.is_64bit {
            flags |= BAR_MEM_64BIT;
        }
        if request.prefetchable {
            flags |= BAR_PREFETCHABLE;
        }
        let mask = !(request.size - 1);
        self.registers[BAR0_REG + index] = flags;
        self.writable[BAR0_REG + index] = mask as u32;
        if request.is_64bit {
            self.writable[BAR0_REG + last] = (mask >> 32) as u32;
            // The upper half is used; mark it so no BAR is declared there.
            self.bars[last] = Some(Bar {
                size: 0,
                is_64bit: false,
            });
        }
        self.bars[index] = Some(Bar {
            size: request.size,
            is_64bit: request.is_64bit,
        });
        Ok(())
    }

    /// The declared BARs: (index, request size, 64-bit).
    pub fn bars(&self) -> impl Iterator<Item = (usize, u64, bool)> + '_ {
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.filter(|b| b.size > 0).map(|b| (i, b.size, b.is_64bit)))
    }

    /// Places BAR `index` at `addr` (aligned to its size), as firmware would.
    pub fn set_bar_address(&mut self, index: usize, addr: u64) -> Result<(), PciError> {
        let bar = self
            .bars
            .get(index)
            .copied()
            .flatten()
            .filter(|b| b.size > 0);
        let Some(bar) = bar else {
            return Err(PciError::NoSuchBar { index });
        };
        let end = addr.checked_add(bar.size);
        if !addr.is_multiple_of(bar.size) || end.is_none_or(|e| !bar.is_64bit && e > 1 << 32) {
            return Err(PciError::BarAddress {
                index,
                addr,
                size: bar.size,
            });
        }
        let reg = BAR0_REG + index;
        self.registers[reg] = (self.registers[reg] & 0xf) | addr as u32;
        if bar.is_64bit {
            self.registers[reg + 1] = (addr >> 32) as u32;
        }
        Ok(())
    }

    /// Where BAR `index` currently is (as the guest last programmed it).
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let bar = self
            .bars
            .get(index)
            .copied()
            .flatten()
            .filter(|b| b.size > 0)?;
        let reg = BAR0_REG + index;
        let low = u64::from(self.registers[reg] & !0xf);
        let high = if bar.is_64bit {
            u64::from(self.registers[reg + 1])
        } else {
            0
        };
        Some(high << 32 | low)
    }

    /// The BAR containing guest-physical `addr` and the offset in it, if memory decoding is on.
    /// A BAR being sized (all ones written) or left at 0 decodes nothing.
    pub fn bar_containing(&self, addr: u64) -> Option<(usize, u64)> {
        if self.command() & COMMAND_MEMORY_SPACE == 0 {
            return None;
        }
        self.bars().find_map(|(index, size, _)| {
            let base = self.bar_address(index)?;
            let sizing = base
                == !(size - 1)
                    & if self.bars[index]?.is_64bit {
                        u64::MAX
                    } else {
                        0xffff_ffff
                    };
            (base != 0 && !sizing && addr >= base && addr - base < size)
                .then(|| (index, addr - base))
        })
    }

    /// Appends a capability: `body` starts with the capability ID byte; its second byte (the
    /// next pointer) is filled in. `writable` (same length, or empty for read-only) masks the
    /// bytes the guest may change. Returns the capability's offset.
    pub fn add_capability(&mut self, body: &[u8], writable: &[u8]) -> Result<usize, PciError> {
        let len = body.len().next_multiple_of(4);
        let offset = self.next_capability;
        if body.len() < 2
            || offset + len > LEGACY_CONFIG_DWORDS * 4
            || (!writable.is_empty() && writable.len() != body.len())
        {
            return Err(PciError::CapabilitySpace { len: body.len() });
        }
        for (i, &b) in body.iter().enumerate() {
            self.set_byte(offset + i, if i == 1 { 0 } else { b });
            if let Some(&w) = writable.get(i) {
                let reg = (offset + i) / 4;
                self.writable[reg] |= u32::from(w) << (((offset + i) % 4) * 8);
            }
        }
        match self.last_capability {
            Some(prev) => self.set_byte(prev + 1, offset as u8),
            None => {
                self.registers[CAPABILITY_POINTER_REG] = offset as u32;
                self.registers[COMMAND_REG] |= STATUS_CAPABILITIES_LIST;
            }
        }
        self.last_capability = Some(offset);
        self.next_capability = offset + len;
        Ok(offset)
    }

    /// Gives dword register `reg` (past the standard header) its reset `value` and the
    /// bits a guest may change (`writable`): chipset functions' own registers.
    pub fn init_reg(&mut self, reg: usize, value: u32, writable: u32) {
        if let (Some(r), Some(w)) = (self.registers.get_mut(reg), self.writable.get_mut(reg)) {
            *r = value;
            *w = writable;
        }
    }

    fn set_byte(&mut self, offset: usize, value: u8) {
        let shift = (offset % 4) * 8;
        let reg = &mut self.registers[offset / 4];
        *reg = (*reg & !(0xff << shift)) | u32::from(value) << shift;
    }
}

/// The bits of a dword an access of `len` bytes at byte `offset` covers, if it is a valid
/// naturally aligned 1-, 2- or 4-byte access.
pub fn access_mask(offset: u64, len: usize) -> Option<u32> {
    match (offset, len) {
        (0..=3, 1) => Some(0xff << (offset * 8)),
        (0 | 2, 2) => Some(0xffff << (offset * 8)),
        (0, 4) => Some(u32::MAX),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const IDS: PciIds = PciIds {
        vendor: 0x1af4,
        device: 0x1042,
        revision: 1,
        class: 0x01_80_00,
        subsystem_vendor: 0x1af4,
        subsystem: 0x40,
    };

    fn write32(c: &mut PciConfiguration, reg: usize, v: u32) {
        c.write_reg(reg, 0, &v.to_le_bytes());
    }

    #[test]
    fn identity_registers_are_read_only() {
        let mut c = PciConfiguration::new(IDS);
        assert_eq!(c.read_reg(0), 0x1042_1af4);
        assert_eq!(c.read_reg(2), 0x0180_0001);
        write32(&mut c, 0, 0xdead_beef);
        write32(&mut c, 2, 0);
        assert_eq!(c.read_reg(0), 0x1042_1af4);
        assert_eq!(c.read_reg(2), 0x0180_0001);
    }

    #[test]
    fn command_keeps_only_writable_bits_and_partial_writes_merge() {
        let mut c = PciConfiguration::new(IDS);
        c.write_reg(1, 0, &0xffffu16.to_le_bytes());
        assert_eq!(c.command(), 0x0407);
        c.write_reg(1, 0, &[0x02]);
        assert_eq!(c.command(), 0x0402);
        // Misaligned and crossing accesses change nothing.
        c.write_reg(1, 1, &[0, 0]);
        c.write_reg(1, 3, &[0, 0]);
        assert_eq!(c.command(), 0x0402);
        c.write_reg(15, 0, &[0x0b]);
        assert_eq!(c.read_reg(15) & 0xff, 0x0b);
    }

    #[test]
    fn bar_sizing_protocol_reports_size_and_flags() {
        let mut c = PciConfiguration::new(IDS);
        c.add_bar(
            0,
            BarRequest {
                size: 0x4000,
                is_64bit: true,
                prefetchable: false,
            },
        )
        .unwrap();
        c.add_bar(
            2,
            BarRequest {
                size: 0x1000,
                is_64bit: false,
                prefetchable: true,
            },
        )
        .unwrap();
        c.set_bar_address(0, 0x1_d800_0000).unwrap();
        c.set_bar_address(2, 0xd800_4000).unwrap();
        assert_eq!(c.read_reg(4), 0xd800_0004);
        assert_eq!(c.read_reg(5), 0x1);
        assert_eq!(c.read_reg(6), 0xd800_4008);
        // Sizing: write all ones, read back the mask, restore.
        write32(&mut c, 4, u32::MAX);
        write32(&mut c, 5, u32::MAX);
        assert_eq!(c.read_reg(4), 0xffff_c004);
        assert_eq!(c.read_reg(5), u32::MAX);
        let size = !(u64::from(c.read_reg(5)) << 32 | u64::from(c.read_reg(4) & !0xf)) + 1;
        assert_eq!(size, 0x4000);
        write32(&mut c, 6, u32::MAX);
        assert_eq!(c.read_reg(6), 0xffff_f008);
        // Unused BARs read 0 whatever is written.
        write32(&mut c, 8, u32::MAX);
        assert_eq!(c.read_reg(8), 0);
        write32(&mut c, 4, 0xd800_0000);
        write32(&mut c, 5, 0);
        assert_eq!(c.bar_address(0), Some(0xd800_0000));
    }

    #[test]
    fn bars_decode_only_with_memory_enabled_and_not_while_sizing() {
        let mut c = PciConfiguration::new(IDS);
        c.add_bar(
            0,
            BarRequest {
                size: 0x4000,
                is_64bit: true,
                prefetchable: false,
            },
        )
        .unwrap();
        c.set_bar_address(0, 0xd800_0000).unwrap();
        assert_eq!(c.bar_containing(0xd800_0010), None);
        c.write_reg(1, 0, &[COMMAND_MEMORY_SPACE as u8]);
        assert_eq!(c.bar_containing(0xd800_0010), Some((0, 0x10)));
        assert_eq!(c.bar_containing(0xd800_4000), None);
        assert_eq!(c.bar_containing(0xd7ff_ffff), None);
        write32(&mut c, 4, u32::MAX);
        write32(&mut c, 5, u32::MAX);
        assert_eq!(c.bar_containing(0xffff_ffff_ffff_c010), None);
    }

    #[test]
    fn bad_bars_are_refused() {
        let mut c = PciConfiguration::new(IDS);
        let r = |size, is_64bit| BarRequest {
            size,
            is_64bit,
            prefetchable: false,
        };
        assert!(matches!(
            c.add_bar(5, r(0x1000, true)),
            Err(PciError::BarSlot { .. })
        ));
        assert!(matches!(
            c.add_bar(0, r(0x1001, false)),
            Err(PciError::BarSize { .. })
        ));
        assert!(matches!(
            c.add_bar(0, r(8, false)),
            Err(PciError::BarSize { .. })
        ));
        c.add_bar(0, r(0x1000, true)).unwrap();
        assert!(matches!(
            c.add_bar(1, r(0x1000, false)),
            Err(PciError::BarSlot { .. })
        ));
        assert!(matches!(
            c.set_bar_address(0, 0x800),
            Err(PciError::BarAddress { .. })
        ));
        assert!(matches!(
            c.set_bar_address(3, 0x1000),
            Err(PciError::NoSuchBar { .. })
        ));
    }

    #[test]
    fn capabilities_form_a_linked_list_with_writable_bytes() {
        let mut c = PciConfiguration::new(IDS);
        let first = c.add_capability(&[0x09, 0xff, 4, 1], &[]).unwrap();
        let second = c
            .add_capability(&[0x11, 0, 0x12, 0x34], &[0, 0, 0xff, 0])
            .unwrap();
        assert_eq!((first, second), (0x40, 0x44));
        assert_ne!(c.read_reg(1) & STATUS_CAPABILITIES_LIST, 0);
        assert_eq!(c.read_reg(13), 0x40);
        assert_eq!(c.read_reg(0x10), 0x0104_4409);
        assert_eq!(c.read_reg(0x11), 0x3412_0011);
        write32(&mut c, 0x11, 0xaabb_ccdd);
        assert_eq!(c.read_reg(0x11), 0x34bb_0011);
        assert!(c.add_capability(&[0; 200], &[]).is_err());
    }

    proptest::proptest! {
        /// Whatever the guest writes, identity registers keep their values, BARs stay
        /// aligned to their size with their type bits, and only writable command bits move.
        #[test]
        fn guest_writes_keep_read_only_bits(
            writes in proptest::collection::vec((0usize..64, 0u64..4, 0usize..3, proptest::prelude::any::<u32>()), 0..64),
        ) {
            let mut c = PciConfiguration::new(IDS);
            c.add_bar(0, BarRequest { size: 0x4000, is_64bit: true, prefetchable: false }).unwrap();
            c.add_bar(2, BarRequest { size: 0x100, is_64bit: false, prefetchable: true }).unwrap();
            c.add_capability(&[0x09, 0, 4, 1], &[]).unwrap();
            for (reg, offset, len, value) in writes {
                let len = [1usize, 2, 4][len];
                c.write_reg(reg, offset, &value.to_le_bytes()[..len]);
                proptest::prop_assert_eq!(c.read_reg(0), 0x1042_1af4);
                proptest::prop_assert_eq!(c.read_reg(2), 0x0180_0001);
                proptest::prop_assert_eq!(c.read_reg(4) & 0x3fff, 0x4);
                proptest::prop_assert_eq!(c.read_reg(6) & 0xff, 0x8);
                proptest::prop_assert_eq!(u32::from(c.command()) & !0x0407, 0);
                proptest::prop_assert_eq!(c.read_reg(13), 0x40);
                proptest::prop_assert_eq!(c.read_reg(0x10), 0x0104_0009);
                for unused_bar in [7usize, 8, 9] {
                    proptest::prop_assert_eq!(c.read_reg(unused_bar), 0);
                }
            }
        }
    }
}
