//! What the boot loader tells a PVH guest (`hvm_start_info`, the Xen PVH ABI that
//! kubevirt-vmm and QEMU both follow): the kernel command line and the modules, the first of
//! which is the initrd. The PVH stub hands its address over in RSI; direct boot passes 0.

use super::mmio::{r8, r32, r64};

const MAGIC: u32 = 0x336e_c578;
/// Longest command line printed.
const MAX_CMDLINE: usize = 256;

/// The start info's address, if it is one (its magic is there).
pub struct StartInfo(u64);

impl StartInfo {
    /// The start info at `addr`, checked by its magic; `None` for 0 or anything else.
    pub fn at(addr: u64) -> Option<StartInfo> {
        // Only RAM below 4 GiB is mapped; the loader puts it in low memory.
        (addr != 0 && addr < (1 << 32) && r32(addr) == MAGIC).then_some(StartInfo(addr))
    }

    /// The command line into `out` (NUL-terminated in memory); its length.
    pub fn cmdline(&self, out: &mut [u8; MAX_CMDLINE]) -> usize {
        let p = r64(self.0 + 24);
        if p == 0 || p >= (1 << 32) {
            return 0;
        }
        let mut n = 0;
        while n < MAX_CMDLINE {
            let b = r8(p + n as u64);
            if b == 0 {
                break;
            }
            out[n] = b;
            n += 1;
        }
        n
    }

    /// The first module (the initrd): its address and size.
    pub fn initrd(&self) -> Option<(u64, u64)> {
        let (count, list) = (r32(self.0 + 12), r64(self.0 + 16));
        (count > 0 && list != 0 && list < (1 << 32)).then(|| (r64(list), r64(list + 8)))
    }
}

/// Prints what the boot loader passed: `boot: cmdline "..."` and `boot: initrd N bytes`.
pub fn report(addr: u64) {
    use super::console;
    let Some(info) = StartInfo::at(addr) else {
        return;
    };
    let mut text = [0u8; MAX_CMDLINE];
    let n = info.cmdline(&mut text);
    console::str("boot: cmdline \"");
    console::text(&text[..n]);
    console::str("\"\n");
    if let Some((paddr, size)) = info.initrd() {
        console::str("boot: initrd ");
        console::dec(size);
        console::str(" bytes");
        if size >= 8 && paddr < (1 << 32) {
            console::str(", starts \"");
            let mut head = [0u8; 8];
            for (i, b) in head.iter_mut().enumerate() {
                let c = r8(paddr + i as u64);
                *b = if c.is_ascii_graphic() { c } else { b'.' };
            }
            console::text(&head);
            console::str("\"");
        }
        console::str("\n");
    }
}
