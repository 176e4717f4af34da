//! PCI configuration space through ports 0xCF8/0xCFC (bus 0 is all the VMM has).

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
const COMMAND: u8 = 0x04;
const COMMAND_MEMORY_BUS_MASTER: u32 = 0x6;
const STATUS_CAPABILITIES: u32 = 1 << 20;
const CAPABILITIES_POINTER: u8 = 0x34;
const BAR0: u8 = 0x10;

/// A function on bus 0.
#[derive(Clone, Copy)]
pub struct Function {
    /// Device (slot) number.
    pub slot: u8,
}

impl Function {
    fn address(self, offset: u8) -> u32 {
        0x8000_0000 | (u32::from(self.slot) << 11) | u32::from(offset & 0xfc)
    }

    /// The dword at `offset`.
    pub fn read32(self, offset: u8) -> u32 {
        super::outl(CONFIG_ADDRESS, self.address(offset));
        super::inl(CONFIG_DATA)
    }

    /// Writes the dword at `offset`.
    pub fn write32(self, offset: u8, v: u32) {
        super::outl(CONFIG_ADDRESS, self.address(offset));
        super::outl(CONFIG_DATA, v);
    }

    /// The byte at `offset`.
    pub fn read8(self, offset: u8) -> u8 {
        (self.read32(offset) >> ((offset & 3) * 8)) as u8
    }

    /// (vendor, device).
    pub fn id(self) -> (u16, u16) {
        let v = self.read32(0);
        (v as u16, (v >> 16) as u16)
    }

    /// Turns on memory decoding and bus mastering.
    pub fn enable(self) {
        let v = self.read32(COMMAND);
        self.write32(COMMAND, (v & 0xffff) | COMMAND_MEMORY_BUS_MASTER);
    }

    /// The memory address of BAR `n` (64-bit BARs read whole), if it is a memory BAR.
    pub fn bar(self, n: u8) -> Option<u64> {
        let off = BAR0 + 4 * n;
        let lo = self.read32(off);
        if lo & 1 != 0 {
            return None;
        }
        let mut addr = u64::from(lo & !0xf);
        if (lo >> 1) & 3 == 2 {
            addr |= u64::from(self.read32(off + 4)) << 32;
        }
        Some(addr)
    }

    /// Offsets of the capabilities with id `id`, in list order (at most 48 followed, so a
    /// looping list ends).
    pub fn capabilities(self, id: u8) -> impl Iterator<Item = u8> {
        let mut next = if self.read32(COMMAND) & STATUS_CAPABILITIES != 0 {
            self.read8(CAPABILITIES_POINTER) & 0xfc
        } else {
            0
        };
        let mut budget = 48;
        core::iter::from_fn(move || {
            while next != 0 && budget > 0 {
                budget -= 1;
                let at = next;
                next = self.read8(at + 1) & 0xfc;
                if self.read8(at) == id {
                    return Some(at);
                }
            }
            None
        })
    }
}

/// Every present function 0 on bus 0.
pub fn scan() -> impl Iterator<Item = (Function, u16, u16)> {
    (0..32u8).filter_map(|slot| {
        let f = Function { slot };
        let (vendor, device) = f.id();
        (vendor != 0xffff).then_some((f, vendor, device))
    })
}
