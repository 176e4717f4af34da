//! libFuzzer target for the fw_cfg device's guest-facing protocol: the input is a sequence of
//! port accesses (selector writes, data reads, DMA address writes, signature reads, stray
//! writes) against a device serving a few files, with DMA descriptors the input also writes
//! into a small guest memory. Any outcome but a panic, a hang or an out-of-bounds access is
//! fine: the device must bounds-check every key, address and length the guest gives.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-vmm/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run fw_cfg -- -max_total_time=60`

#![no_main]

use kubevirt_vmm::BusDevice;
use kubevirt_vmm::devices::fw_cfg::{FwCfg, FwCfgItems};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress};
use kubevirt_vmm::GuestMemoryMmap;

/// Guest RAM: small, so random DMA targets often fall outside it.
const RAM: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let mut items = FwCfgItems::new(64 << 20, 2, [1; 16]);
    let _ = items.add_file("etc/small", vec![7; 9]);
    let _ = items.add_file("etc/big", (0..20_000u32).map(|i| i as u8).collect());
    let Ok(mem) = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]) else {
        return;
    };
    let mut dev = FwCfg::new(&items, mem.clone());
    let mut input = data;
    let mut take = |n: usize| -> Option<Vec<u8>> {
        if input.len() < n {
            return None;
        }
        let (head, rest) = input.split_at(n);
        input = rest;
        Some(head.to_vec())
    };
    while let Some(op) = take(1) {
        match op[0] % 6 {
            0 => {
                let Some(k) = take(2) else { break };
                dev.write(0x510, 0, &k);
            }
            1 => {
                let Some(n) = take(2) else { break };
                let mut buf = vec![0u8; usize::from(u16::from_le_bytes([n[0], n[1]])) % 8192];
                dev.read(0x510, 1, &mut buf);
            }
            2 => {
                // A descriptor placed by the input, then the address written (high, low).
                let Some(d) = take(16 + 8) else { break };
                let at = u64::from(u32::from_le_bytes([d[16], d[17], d[18], d[19]]));
                let _ = mem.write_slice(&d[..16], GuestAddress(at));
                dev.write(0x510, 4, &d[20..24]);
                dev.write(0x510, 8, &(at as u32).to_be_bytes());
            }
            3 => {
                let Some(a) = take(8) else { break };
                dev.write(0x510, 4, &a);
            }
            4 => {
                let Some(o) = take(2) else { break };
                let mut buf = vec![0u8; usize::from(o[1] % 9)];
                dev.read(0x510, u64::from(o[0] % 16), &mut buf);
            }
            _ => {
                let Some(w) = take(3) else { break };
                let len = usize::from(w[1] % 9);
                let bytes = vec![w[2]; len];
                dev.write(0x510, u64::from(w[0] % 16), &bytes);
            }
        }
    }
});
