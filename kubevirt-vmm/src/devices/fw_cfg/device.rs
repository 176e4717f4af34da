//! The guest-facing protocol: selector, data port and DMA. Every value the guest gives (key,
//! descriptor address, length, target address) is checked: an unknown key reads as zeroes, a
//! descriptor or buffer outside guest RAM ends the transfer with the error bit.

use std::collections::BTreeMap;

use vm_memory::{Bytes, GuestAddress};
use crate::memory::GuestMemoryMmap;

use super::FW_CFG_DMA_SIGNATURE;
use super::items::FwCfgItems;
use crate::bus::{BusDevice, DeviceStateError};
use crate::snapshot::codec::{Decoder, Encoder, field};

/// DMA control bits.
const DMA_ERROR: u32 = 1 << 0;
const DMA_READ: u32 = 1 << 1;
const DMA_SKIP: u32 = 1 << 2;
const DMA_SELECT: u32 = 1 << 3;
const DMA_WRITE: u32 = 1 << 4;

/// Offsets in the port range.
const OFF_SELECTOR: u64 = 0;
const OFF_DATA: u64 = 1;
const OFF_DMA_HIGH: u64 = 4;
const OFF_DMA_LOW: u64 = 8;

/// Zero-fill granularity for reads past an item's end.
const ZERO_CHUNK: usize = 4096;

/// The fw_cfg device on the port bus at [`super::FW_CFG_SELECTOR_PORT`].
#[derive(Debug)]
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    memory: GuestMemoryMmap,
    selected: u16,
    offset: usize,
    dma_high: u32,
}

impl FwCfg {
    /// A device serving `items`, doing DMA into `memory`.
    pub fn new(items: &FwCfgItems, memory: GuestMemoryMmap) -> Self {
        FwCfg {
            items: items.freeze(),
            memory,
            selected: 0,
            offset: 0,
            dma_high: 0,
        }
    }

    /// CRC-32 over every item's key, length and bytes.
    fn items_checksum(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for (key, bytes) in &self.items {
            h.update(&key.to_le_bytes());
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        h.finalize()
    }

    fn select(&mut self, key: u16) {
        self.selected = key;
        self.offset = 0;
    }

    fn current(&self) -> &[u8] {
        self.items.get(&self.selected).map_or(&[], Vec::as_slice)
    }

    /// The data port: the selected item's next bytes, zeroes past its end.
    fn read_data(&mut self, out: &mut [u8]) {
        let item = self.items.get(&self.selected).map_or(&[][..], Vec::as_slice);
        let start = self.offset.min(item.len());
        let n = out.len().min(item.len() - start);
        out[..n].copy_from_slice(&item[start..start + n]);
        out[n..].fill(0);
        self.offset = self.offset.saturating_add(n);
    }

    /// Runs the DMA descriptor at guest address `addr`; writes its control word back (0 or
    /// the error bit), as QEMU does. A descriptor outside RAM is ignored.
    fn dma(&mut self, addr: u64) {
        let mut desc = [0u8; 16];
        if self.memory.read_slice(&mut desc, GuestAddress(addr)).is_err() {
            return;
        }
        let control = u32::from_be_bytes([desc[0], desc[1], desc[2], desc[3]]);
        let mut length = u32::from_be_bytes([desc[4], desc[5], desc[6], desc[7]]);
        let mut target = u64::from_be_bytes([
            desc[8], desc[9], desc[10], desc[11], desc[12], desc[13], desc[14], desc[15],
        ]);
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let read = control & DMA_READ != 0;
        let write = control & DMA_WRITE != 0;
        let skip = control & DMA_SKIP != 0;
        if !(read || write || skip) {
            length = 0;
        }
        let mut status = 0;
        while length > 0 && status == 0 {
            let item_len = self.current().len();
            let available = item_len.saturating_sub(self.offset);
            let len = if available == 0 {
                // Past the end (or no such item): reads see zeroes, writes fail.
                if write || (read && self.zero_fill(target, length).is_err()) {
                    status = DMA_ERROR;
                }
                length
            } else {
                let len = (length as usize).min(available);
                if write {
                    // Every item is read-only.
                    status = DMA_ERROR;
                } else if read {
                    let data = &self.current()[self.offset..self.offset + len];
                    if self.memory.write_slice(data, GuestAddress(target)).is_err() {
                        status = DMA_ERROR;
                    }
                }
                self.offset += len;
                len as u32
            };
            target = target.wrapping_add(u64::from(len));
            length -= len;
        }
        // The descriptor was readable, so its first word is writable RAM too.
        let _ = self
            .memory
            .write_slice(&status.to_be_bytes(), GuestAddress(addr));
    }

    fn zero_fill(&self, mut target: u64, mut length: u32) -> Result<(), vm_memory::GuestMemoryError> {
        let zeros = [0u8; ZERO_CHUNK];
        while length > 0 {
            let n = (length as usize).min(ZERO_CHUNK);
            self.memory.write_slice(&zeros[..n], GuestAddress(target))?;
            target = target.wrapping_add(n as u64);
            length -= n as u32;
        }
        Ok(())
    }
}

impl BusDevice for FwCfg {
    fn snapshot_name(&self) -> &'static str {
        "fw_cfg"
    }

    fn save_state(&mut self) -> Result<Option<Vec<u8>>, DeviceStateError> {
        // The items come from the VM's configuration and the guest cannot write them: a
        // checksum is enough to refuse a restore under other firmware inputs.
        let mut e = Encoder::new();
        e.u32(u32::from(self.selected));
        e.u64(self.offset as u64);
        e.u32(self.dma_high);
        e.u32(self.items_checksum());
        Ok(Some(e.finish()))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        let invalid = |e: crate::snapshot::CodecError| DeviceStateError::Invalid(e.to_string());
        let mut d = Decoder::new(state);
        let selected = d.u32(&field("fw_cfg selector")).map_err(invalid)?;
        let offset = d.u64(&field("fw_cfg offset")).map_err(invalid)?;
        let dma_high = d.u32(&field("fw_cfg DMA address")).map_err(invalid)?;
        let checksum = d.u32(&field("fw_cfg items checksum")).map_err(invalid)?;
        d.finish().map_err(invalid)?;
        let (Ok(selected), Ok(offset)) = (u16::try_from(selected), usize::try_from(offset)) else {
            return Err(DeviceStateError::Invalid(format!(
                "fw_cfg selector {selected} or offset {offset} out of range"
            )));
        };
        if checksum != self.items_checksum() {
            return Err(DeviceStateError::Invalid(
                "the firmware configuration items (kernel, command line, tables) differ from the snapshot's: restore with the same boot configuration".into(),
            ));
        }
        self.selected = selected;
        self.offset = offset;
        self.dma_high = dma_high;
        Ok(())
    }

    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match offset {
            OFF_DATA => self.read_data(data),
            OFF_DMA_HIGH..=11 => {
                let sig = FW_CFG_DMA_SIGNATURE.to_be_bytes();
                for (i, b) in data.iter_mut().enumerate() {
                    let at = (offset - OFF_DMA_HIGH) as usize + i;
                    *b = sig.get(at).copied().unwrap_or(0);
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (OFF_SELECTOR, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (OFF_DMA_HIGH, 4) => {
                self.dma_high = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            }
            (OFF_DMA_LOW, 4) => {
                let low = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let addr = (u64::from(self.dma_high) << 32) | u64::from(low);
                self.dma_high = 0;
                self.dma(addr);
            }
            (OFF_DMA_HIGH, 8) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(data);
                self.dma_high = 0;
                self.dma(u64::from_be_bytes(b));
            }
            // Data port writes are ignored (QEMU dropped them in 2.4); so is anything else.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fw_cfg::{FW_CFG_FILE_DIR, FW_CFG_FILE_FIRST, FW_CFG_ID, FW_CFG_SIGNATURE};
    use proptest::prelude::*;

    const RAM: u64 = 1 << 20;

    fn device() -> FwCfg {
        let mut items = FwCfgItems::new(64 << 20, 1, [7; 16]);
        items.add_file("etc/one", (0..200u8).collect()).unwrap();
        items.add_file("etc/two", vec![0xab; 5000]).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        FwCfg::new(&items, mem)
    }

    fn select(d: &mut FwCfg, key: u16) {
        d.write(0x510, OFF_SELECTOR, &key.to_le_bytes());
    }

    fn read(d: &mut FwCfg, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        d.read(0x510, OFF_DATA, &mut v);
        v
    }

    #[test]
    fn a_restored_device_reads_on_where_the_saved_one_was() {
        let mut d = device();
        select(&mut d, FW_CFG_FILE_DIR);
        let _ = read(&mut d, 10);
        let state = d.save_state().unwrap().unwrap();
        let rest = read(&mut d, 30);
        let mut fresh = device();
        fresh.restore_state(&state).unwrap();
        assert_eq!(read(&mut fresh, 30), rest);
    }

    #[test]
    fn other_items_or_a_damaged_state_are_refused() {
        let mut d = device();
        let state = d.save_state().unwrap().unwrap();
        let mut items = FwCfgItems::new(64 << 20, 1, [7; 16]);
        items.add_file("etc/one", vec![1]).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let mut other = FwCfg::new(&items, mem);
        let err = other.restore_state(&state).unwrap_err().to_string();
        assert!(err.contains("differ from the snapshot"), "{err}");
        assert!(device().restore_state(&state[..5]).is_err());
    }

    fn dma(d: &mut FwCfg, at: u64, control: u32, length: u32, target: u64) -> u32 {
        let mut desc = Vec::new();
        desc.extend_from_slice(&control.to_be_bytes());
        desc.extend_from_slice(&length.to_be_bytes());
        desc.extend_from_slice(&target.to_be_bytes());
        d.memory.write_slice(&desc, GuestAddress(at)).unwrap();
        d.write(0x510, OFF_DMA_HIGH, &((at >> 32) as u32).to_be_bytes());
        d.write(0x510, OFF_DMA_LOW, &(at as u32).to_be_bytes());
        d.memory.read_obj::<u32>(GuestAddress(at)).map(u32::from_be).unwrap()
    }

    #[test]
    fn the_port_interface_reads_signature_id_and_files() {
        let mut d = device();
        select(&mut d, FW_CFG_SIGNATURE);
        assert_eq!(read(&mut d, 4), b"QEMU");
        assert_eq!(read(&mut d, 2), [0, 0], "past the end reads zeroes");
        select(&mut d, FW_CFG_ID);
        assert_eq!(read(&mut d, 4), [3, 0, 0, 0], "traditional + DMA");
        select(&mut d, FW_CFG_FILE_DIR);
        let dir = read(&mut d, 4 + 128);
        assert_eq!(&dir[..4], &2u32.to_be_bytes());
        assert!(dir[12..].starts_with(b"etc/one\0"));
        select(&mut d, FW_CFG_FILE_FIRST);
        assert_eq!(read(&mut d, 3), [0, 1, 2]);
        assert_eq!(read(&mut d, 2), [3, 4], "reads continue where they stopped");
        let mut sig = [0u8; 8];
        d.read(0x510, OFF_DMA_HIGH, &mut sig);
        assert_eq!(&sig, b"QEMU CFG");
    }

    #[test]
    fn dma_selects_reads_skips_and_refuses_writes() {
        let mut d = device();
        let key = u32::from(FW_CFG_FILE_FIRST) << 16;
        assert_eq!(dma(&mut d, 0x1000, key | DMA_SELECT | DMA_READ, 10, 0x2000), 0);
        let mut got = [0u8; 10];
        d.memory.read_slice(&mut got, GuestAddress(0x2000)).unwrap();
        assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(dma(&mut d, 0x1000, DMA_SKIP, 90, 0), 0);
        assert_eq!(dma(&mut d, 0x1000, DMA_READ, 2, 0x2000), 0);
        d.memory.read_slice(&mut got[..2], GuestAddress(0x2000)).unwrap();
        assert_eq!(got[..2], [100, 101]);
        // Reading past the end zero-fills; writing fails.
        d.memory.write_slice(&[0xff; 300], GuestAddress(0x3000)).unwrap();
        assert_eq!(dma(&mut d, 0x1000, DMA_READ, 300, 0x3000), 0);
        let mut tail = [0u8; 300];
        d.memory.read_slice(&mut tail, GuestAddress(0x3000)).unwrap();
        assert_eq!(tail[..98], (102..200u8).collect::<Vec<_>>()[..]);
        assert!(tail[98..].iter().all(|&b| b == 0));
        assert_eq!(dma(&mut d, 0x1000, key | DMA_SELECT | DMA_WRITE, 4, 0x2000), DMA_ERROR);
        // A target outside RAM is an error, not a crash.
        assert_eq!(dma(&mut d, 0x1000, key | DMA_SELECT | DMA_READ, 16, RAM - 8), DMA_ERROR);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Select(u16),
        Read(usize),
        Write(u64, Vec<u8>),
        Dma { at: u64, control: u32, length: u32, target: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            prop_oneof![Just(0u16), Just(1), Just(0x19), Just(0x20), Just(0x21), any::<u16>()]
                .prop_map(Op::Select),
            (0usize..6000).prop_map(Op::Read),
            (0u64..16, proptest::collection::vec(any::<u8>(), 0..9)).prop_map(|(o, d)| Op::Write(o, d)),
            (
                prop_oneof![0u64..RAM + 64, any::<u64>()],
                any::<u32>(),
                prop_oneof![0u32..10_000, any::<u32>()],
                prop_oneof![0u64..RAM + 64, any::<u64>()],
            )
                .prop_map(|(at, control, length, target)| Op::Dma { at, control, length, target }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever the guest writes to the ports or puts in a DMA descriptor, the device does
        /// not panic, never writes outside guest RAM, and the data port keeps returning the
        /// selected item's bytes in order.
        #[test]
        fn guest_controlled_accesses_are_bounds_checked(ops in proptest::collection::vec(op(), 1..40)) {
            let mut d = device();
            let items = d.items.clone();
            let mut model_key = 0u16;
            let mut model_off = 0usize;
            for op in ops {
                match op {
                    Op::Select(k) => {
                        select(&mut d, k);
                        model_key = k;
                        model_off = 0;
                    }
                    Op::Read(n) => {
                        let got = read(&mut d, n);
                        let item = items.get(&model_key).map_or(&[][..], Vec::as_slice);
                        let start = model_off.min(item.len());
                        let k = n.min(item.len() - start);
                        prop_assert_eq!(&got[..k], &item[start..start + k]);
                        prop_assert!(got[k..].iter().all(|&b| b == 0));
                        model_off = model_off.saturating_add(k);
                    }
                    Op::Write(o, data) => {
                        d.write(0x510, o, &data);
                        if o == OFF_SELECTOR && data.len() == 2 {
                            model_key = u16::from_le_bytes([data[0], data[1]]);
                            model_off = 0;
                        }
                        if o == OFF_DMA_LOW || (o == OFF_DMA_HIGH && data.len() == 8) {
                            // A DMA ran from an unknown descriptor: resync the model.
                            model_key = d.selected;
                            model_off = d.offset;
                        }
                    }
                    Op::Dma { at, control, length, target } => {
                        let at = at.min(u64::MAX - 16);
                        if at + 16 <= RAM {
                            let status = dma(&mut d, at, control, length, target);
                            prop_assert!(status == 0 || status == DMA_ERROR);
                        } else {
                            d.write(0x510, OFF_DMA_HIGH, &((at >> 32) as u32).to_be_bytes());
                            d.write(0x510, OFF_DMA_LOW, &(at as u32).to_be_bytes());
                        }
                        model_key = d.selected;
                        model_off = d.offset;
                    }
                }
            }
        }
    }
}
