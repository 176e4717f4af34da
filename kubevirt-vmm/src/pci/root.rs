//! The root complex: bus 0's 32 slots, configuration access through ports 0xCF8/0xCFC and
//! ECAM, and routing of BAR accesses to whichever device decodes the address.

use std::sync::{Arc, Mutex, PoisonError};

use super::PciError;
use super::config::access_mask;
use super::device::{HostBridge, PciDevice};
use super::piix::{PIIX_SLOT, PIIX4_PM_FUNCTION, Piix3Isa, Piix4Pm};
use crate::bus::{BusDevice, DeviceStateError};
use crate::snapshot::codec::{Decoder, Encoder, field};

/// Device slots on bus 0.
pub const SLOTS: usize = 32;
/// Functions per slot.
pub const FUNCTIONS: usize = 8;
/// Bytes of ECAM per bus: 32 devices x 8 functions x 4 KiB.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// The configuration address port (0xCF8); the data port (0xCFC) follows, 8 ports in all.
pub const CONFIG_IO_PORT: u16 = 0xcf8;
/// Ports [`PciConfigIo`] spans.
pub const CONFIG_IO_SPAN: u64 = 8;

/// A PCI function as the root complex holds it.
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Bus 0, frozen once built: 32 slots of 8 functions (absent ones are `None`).
pub struct PciRoot {
    /// Slot-major: function `f` of slot `s` at `s * FUNCTIONS + f`.
    functions: Vec<Option<SharedPciDevice>>,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used: Vec<String> = (0..self.functions.len())
            .filter(|&i| self.functions[i].is_some())
            .map(function_name)
            .collect();
        f.debug_struct("PciRoot").field("functions", &used).finish()
    }
}

/// "slot.function" of index `i`, as lspci writes it.
fn function_name(i: usize) -> String {
    format!("{:02x}.{}", i / FUNCTIONS, i % FUNCTIONS)
}

fn lock(dev: &SharedPciDevice) -> std::sync::MutexGuard<'_, dyn PciDevice + 'static> {
    dev.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PciRoot {
    /// The device at `bus:device.function`, if present (bus 0 only).
    fn function(&self, bus: u8, device: u8, function: u8) -> Option<&SharedPciDevice> {
        if bus != 0 || usize::from(device) >= SLOTS || usize::from(function) >= FUNCTIONS {
            return None;
        }
        self.functions
            .get(usize::from(device) * FUNCTIONS + usize::from(function))?
            .as_ref()
    }

    /// Reads config dword `reg`; absent functions read all-ones (vendor 0xFFFF).
    pub fn config_read(&self, bus: u8, device: u8, function: u8, reg: usize) -> u32 {
        match self.function(bus, device, function) {
            Some(dev) => lock(dev).read_config_register(reg),
            None => u32::MAX,
        }
    }

    /// Writes `data` at byte `offset` of config dword `reg`; absent functions ignore it.
    pub fn config_write(
        &self,
        bus: u8,
        device: u8,
        function: u8,
        reg: usize,
        offset: u64,
        data: &[u8],
    ) {
        if access_mask(offset, data.len()).is_none() {
            return;
        }
        if let Some(dev) = self.function(bus, device, function) {
            lock(dev).write_config_register(reg, offset, data);
        }
    }

    /// Routes a BAR read; `false` if no device decodes `addr`.
    pub fn bar_read(&self, addr: u64, data: &mut [u8]) -> bool {
        for dev in self.functions.iter().flatten() {
            let mut dev = lock(dev);
            if let Some((bar, offset)) = dev.config().bar_containing(addr) {
                dev.read_bar(bar, offset, data);
                return true;
            }
        }
        data.fill(0xff);
        false
    }

    /// Routes a BAR write; `false` if no device decodes `addr`.
    pub fn bar_write(&self, addr: u64, data: &[u8]) -> bool {
        for dev in self.functions.iter().flatten() {
            let mut dev = lock(dev);
            if let Some((bar, offset)) = dev.config().bar_containing(addr) {
                dev.write_bar(bar, offset, data);
                return true;
            }
        }
        false
    }

    /// Routes a read of `port` to the function decoding it; `false` (all-ones) if none does.
    pub fn io_read(&self, port: u64, data: &mut [u8]) -> bool {
        for dev in self.functions.iter().flatten() {
            if lock(dev).read_io(port, data) {
                return true;
            }
        }
        data.fill(0xff);
        false
    }

    /// Routes a write of `port` to the function decoding it; `false` if none does.
    pub fn io_write(&self, port: u64, data: &[u8]) -> bool {
        self.functions
            .iter()
            .flatten()
            .any(|dev| lock(dev).write_io(port, data))
    }
}

impl PciRoot {
    /// Every function's state, for a snapshot: a present flag per function, then the
    /// function's [`PciDevice::save_state`]. Functions that paused their workers stay paused
    /// until [`PciRoot::resume`], also when a later one fails.
    pub fn save_state(&self) -> Result<Vec<u8>, DeviceStateError> {
        let mut e = Encoder::new();
        e.len(self.functions.len());
        for (slot, dev) in self.functions.iter().enumerate() {
            match dev {
                None => e.u8(0),
                Some(dev) => {
                    let state = lock(dev).save_state().map_err(|err| in_slot(slot, err))?;
                    e.u8(1);
                    e.bytes(&state);
                }
            }
        }
        Ok(e.finish())
    }

    /// Gives each slot's function the state [`PciRoot::save_state`] recorded; the slots
    /// must be populated as they were.
    pub fn restore_state(&self, state: &[u8]) -> Result<(), DeviceStateError> {
        let invalid = |e: crate::snapshot::CodecError| DeviceStateError::Invalid(e.to_string());
        let mut d = Decoder::new(state);
        let n = d
            .len(SLOTS * FUNCTIONS, &field("PCI functions"))
            .map_err(invalid)?;
        if n != self.functions.len() {
            return Err(DeviceStateError::Invalid(format!(
                "the snapshot has {n} PCI functions, the bus {}",
                self.functions.len()
            )));
        }
        for (slot, dev) in self.functions.iter().enumerate() {
            let name = function_name(slot);
            let present = d.u8(&|| format!("PCI function {name}")).map_err(invalid)? != 0;
            match (present, dev) {
                (false, None) => {}
                (true, Some(dev)) => {
                    let bytes = d.bytes(&|| format!("PCI function {name}")).map_err(invalid)?;
                    lock(dev)
                        .restore_state(bytes)
                        .map_err(|err| in_slot(slot, err))?;
                }
                (saved, _) => {
                    return Err(DeviceStateError::Invalid(format!(
                        "PCI function {name} is {} in the snapshot and {} in this VM",
                        if saved { "used" } else { "empty" },
                        if saved { "empty" } else { "used" },
                    )));
                }
            }
        }
        d.finish().map_err(invalid)
    }

    /// Lets every function carry on after a snapshot.
    pub fn resume(&self) {
        for dev in self.functions.iter().flatten() {
            lock(dev).resume();
        }
    }
}

/// Names the function (index `i`) in its error.
fn in_slot(i: usize, err: DeviceStateError) -> DeviceStateError {
    let name = function_name(i);
    match err {
        DeviceStateError::Unsupported(why) => DeviceStateError::Unsupported(why),
        DeviceStateError::Invalid(why) => {
            DeviceStateError::Invalid(format!("PCI function {name}: {why}"))
        }
        DeviceStateError::Failed(why) => {
            DeviceStateError::Failed(format!("PCI function {name}: {why}"))
        }
    }
}

/// Builds bus 0: the host bridge at slot 0 and the PIIX functions at slot 1, then devices
/// in slot order with their BARs placed by the VMM in `[window_start, window_start +
/// window_size)`.
#[derive(Debug)]
pub struct PciRootBuilder {
    functions: Vec<Option<SharedPciDevice>>,
    next_addr: u64,
    window_end: u64,
}

impl std::fmt::Debug for dyn PciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PciDevice({:#010x})", self.config().read_reg(0))
    }
}

impl PciRootBuilder {
    /// A bus with the host bridge and the PIIX functions, handing out BAR space from the
    /// window.
    pub fn new(window_start: u64, window_size: u64) -> Self {
        let mut functions: Vec<Option<SharedPciDevice>> = vec![None; SLOTS * FUNCTIONS];
        let piix = usize::from(PIIX_SLOT) * FUNCTIONS;
        functions[0] = Some(Arc::new(Mutex::new(HostBridge::new())));
        functions[piix] = Some(Arc::new(Mutex::new(Piix3Isa::new())));
        functions[piix + usize::from(PIIX4_PM_FUNCTION)] = Some(Arc::new(Mutex::new(Piix4Pm::new())));
        PciRootBuilder {
            functions,
            next_addr: window_start,
            window_end: window_start.saturating_add(window_size),
        }
    }

    /// Puts `device` in the first free slot, assigns its BARs and enables memory decoding
    /// (as firmware would). Returns the slot.
    pub fn add(&mut self, device: SharedPciDevice) -> Result<u8, PciError> {
        let slot = (0..SLOTS)
            .position(|s| self.functions[s * FUNCTIONS..(s + 1) * FUNCTIONS].iter().all(Option::is_none))
            .ok_or(PciError::BusFull)?;
        let mut next = self.next_addr;
        {
            let mut dev = lock(&device);
            let bars: Vec<_> = dev.config().bars().collect();
            for (index, size, _) in bars {
                let addr = next.next_multiple_of(size);
                let end = addr.checked_add(size).filter(|&e| e <= self.window_end);
                let Some(end) = end else {
                    return Err(PciError::WindowFull { size });
                };
                dev.config_mut().set_bar_address(index, addr)?;
                next = end;
            }
            dev.config_mut()
                .write_reg(1, 0, &[super::config::COMMAND_MEMORY_SPACE as u8]);
        }
        self.next_addr = next;
        self.functions[slot * FUNCTIONS] = Some(device);
        Ok(slot as u8)
    }

    /// The frozen bus.
    pub fn build(self) -> Arc<PciRoot> {
        Arc::new(PciRoot {
            functions: self.functions,
        })
    }
}

/// Configuration mechanism #1: the address register at 0xCF8, data at 0xCFC-0xCFF.
#[derive(Debug)]
pub struct PciConfigIo {
    root: Arc<PciRoot>,
    address: u32,
}

impl PciConfigIo {
    /// The port pair for `root`.
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciConfigIo { root, address: 0 }
    }

    /// (bus, device, function, register) of the latched address, if enabled.
    fn target(&self) -> Option<(u8, u8, u8, usize)> {
        (self.address & 0x8000_0000 != 0).then(|| {
            let a = self.address;
            (
                (a >> 16) as u8,
                ((a >> 11) & 0x1f) as u8,
                ((a >> 8) & 7) as u8,
                ((a >> 2) & 0x3f) as usize,
            )
        })
    }
}

impl BusDevice for PciConfigIo {
    fn snapshot_name(&self) -> &'static str {
        "pci-config-io"
    }

    fn save_state(&mut self) -> Result<Option<Vec<u8>>, DeviceStateError> {
        // The root's functions are saved once, with this device: the ECAM and BAR windows
        // are stateless routes to the same functions.
        let functions = self.root.save_state()?;
        let mut e = Encoder::new();
        e.u32(self.address);
        e.bytes(&functions);
        Ok(Some(e.finish()))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), DeviceStateError> {
        let invalid = |e: crate::snapshot::CodecError| DeviceStateError::Invalid(e.to_string());
        let mut d = Decoder::new(state);
        let address = d.u32(&field("configuration address")).map_err(invalid)?;
        let functions = d.bytes(&field("PCI functions")).map_err(invalid)?;
        d.finish().map_err(invalid)?;
        self.root.restore_state(functions)?;
        self.address = address;
        Ok(())
    }

    fn resume(&mut self) {
        self.root.resume();
    }

    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            4..=7 => {
                let byte = offset - 4;
                // Only naturally aligned 1-, 2- and 4-byte accesses reach a register; string
                // I/O (`rep insd`) delivers longer buffers and reads all-ones.
                match (self.target(), access_mask(byte, data.len())) {
                    (Some((b, d, f, reg)), Some(_)) => {
                        let value = self.root.config_read(b, d, f, reg) >> (byte * 8);
                        data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
                    }
                    _ => data.fill(0xff),
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                let mut v = [0u8; 4];
                v.copy_from_slice(data);
                self.address = u32::from_le_bytes(v) & 0x80ff_fffc;
            }
            4..=7 => {
                if let Some((b, d, f, reg)) = self.target() {
                    self.root.config_write(b, d, f, reg, offset - 4, data);
                }
            }
            _ => {}
        }
    }
}

/// Port I/O that no fixed device claims, routed to the function that decodes it now (the
/// PIIX4 PM block wherever the guest put it): the VMM makes it the port bus's fallback.
#[derive(Debug)]
pub struct PciIoWindow {
    root: Arc<PciRoot>,
}

impl PciIoWindow {
    /// The port routes for `root`.
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciIoWindow { root }
    }
}

impl BusDevice for PciIoWindow {
    fn snapshot_name(&self) -> &'static str {
        "pci-io"
    }

    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        self.root.io_read(base + offset, data);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        self.root.io_write(base + offset, data);
    }
}

/// ECAM (memory-mapped configuration, advertised by MCFG): 4 KiB per function.
#[derive(Debug)]
pub struct PciConfigMmio {
    root: Arc<PciRoot>,
}

impl PciConfigMmio {
    /// The ECAM window for `root`.
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciConfigMmio { root }
    }

    fn decode(offset: u64) -> (u8, u8, u8, usize, u64) {
        (
            (offset >> 20) as u8,
            ((offset >> 15) & 0x1f) as u8,
            ((offset >> 12) & 7) as u8,
            ((offset & 0xfff) >> 2) as usize,
            offset & 3,
        )
    }
}

impl BusDevice for PciConfigMmio {
    fn snapshot_name(&self) -> &'static str {
        "pci-ecam"
    }


    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let (b, d, f, reg, byte) = Self::decode(offset);
        if access_mask(byte, data.len()).is_none() {
            data.fill(0xff);
            return;
        }
        let value = self.root.config_read(b, d, f, reg) >> (byte * 8);
        data.copy_from_slice(&value.to_le_bytes()[..data.len()]);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (b, d, f, reg, byte) = Self::decode(offset);
        self.root.config_write(b, d, f, reg, byte, data);
    }
}

/// The MMIO window BARs live in: routes each access to the device decoding it now, so a
/// guest that moves a BAR keeps reaching its device.
#[derive(Debug)]
pub struct PciBarWindow {
    root: Arc<PciRoot>,
}

impl PciBarWindow {
    /// The BAR window for `root`.
    pub fn new(root: Arc<PciRoot>) -> Self {
        PciBarWindow { root }
    }
}

impl BusDevice for PciBarWindow {
    fn snapshot_name(&self) -> &'static str {
        "pci-bars"
    }


    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        self.root.bar_read(base + offset, data);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        self.root.bar_write(base + offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::{BarRequest, PciConfiguration, PciIds};

    /// A function with one 64-bit BAR whose registers echo the last write.
    struct Echo {
        config: PciConfiguration,
        last: Vec<(usize, u64, Vec<u8>)>,
    }

    impl Echo {
        fn shared(device: u16, bar_size: u64) -> Arc<Mutex<Echo>> {
            let mut config = PciConfiguration::new(PciIds {
                vendor: 0x1af4,
                device,
                revision: 1,
                class: 0xff_00_00,
                subsystem_vendor: 0,
                subsystem: 0,
            });
            config
                .add_bar(
                    0,
                    BarRequest {
                        size: bar_size,
                        is_64bit: true,
                        prefetchable: false,
                    },
                )
                .unwrap();
            Arc::new(Mutex::new(Echo {
                config,
                last: Vec::new(),
            }))
        }
    }

    impl PciDevice for Echo {
        fn config(&self) -> &PciConfiguration {
            &self.config
        }
        fn config_mut(&mut self) -> &mut PciConfiguration {
            &mut self.config
        }
        fn read_bar(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
            data.fill((bar as u8) << 4 | offset as u8);
        }
        fn write_bar(&mut self, bar: usize, offset: u64, data: &[u8]) {
            self.last.push((bar, offset, data.to_vec()));
        }
    }

    const WINDOW: u64 = 0xd800_0000;

    fn bus() -> (Arc<PciRoot>, Arc<Mutex<Echo>>, Arc<Mutex<Echo>>) {
        let a = Echo::shared(0x1042, 0x4000);
        let b = Echo::shared(0x1044, 0x1000);
        let mut builder = PciRootBuilder::new(WINDOW, 0x10_0000);
        // Slots 0 and 1 are the host bridge and the PIIX functions.
        assert_eq!(builder.add(a.clone()).unwrap(), 2);
        assert_eq!(builder.add(b.clone()).unwrap(), 3);
        (builder.build(), a, b)
    }

    fn cf8(io: &mut PciConfigIo, dev: u32, func: u32, reg: u32) {
        io.write(
            0xcf8,
            0,
            &(0x8000_0000 | dev << 11 | func << 8 | reg << 2).to_le_bytes(),
        );
    }

    fn cfc32(io: &mut PciConfigIo) -> u32 {
        let mut d = [0u8; 4];
        io.read(0xcf8, 4, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn port_io_reads_ids_and_absent_functions_read_all_ones() {
        let (root, _, _) = bus();
        let mut io = PciConfigIo::new(root);
        cf8(&mut io, 0, 0, 0);
        assert_eq!(cfc32(&mut io), 0x1237_8086, "i440FX");
        cf8(&mut io, 1, 0, 0);
        assert_eq!(cfc32(&mut io), 0x7000_8086, "PIIX3 ISA bridge");
        cf8(&mut io, 1, 0, 3);
        assert_eq!(cfc32(&mut io) >> 16 & 0x80, 0x80, "slot 1 is multi-function");
        cf8(&mut io, 1, 3, 0);
        assert_eq!(cfc32(&mut io), 0x7113_8086, "PIIX4 PM");
        cf8(&mut io, 2, 0, 0);
        assert_eq!(cfc32(&mut io), 0x1042_1af4);
        // 2-byte read of the device ID at 0xCFE.
        let mut d = [0u8; 2];
        io.read(0xcf8, 6, &mut d);
        assert_eq!(u16::from_le_bytes(d), 0x1042);
        for (dev, func) in [(4, 0), (31, 0), (1, 1), (1, 7), (2, 1), (2, 7)] {
            cf8(&mut io, dev, func, 0);
            io.read(0xcf8, 4, &mut d);
            assert_eq!(u16::from_le_bytes(d), 0xffff, "{dev}.{func}");
        }
        // Disabled address: all ones; the address register reads back.
        io.write(0xcf8, 0, &0x0000_0800u32.to_le_bytes());
        assert_eq!(cfc32(&mut io), u32::MAX);
        let mut a = [0u8; 4];
        io.read(0xcf8, 0, &mut a);
        assert_eq!(u32::from_le_bytes(a), 0x800);
    }

    #[test]
    fn string_io_and_misaligned_accesses_read_all_ones_without_panicking() {
        let (root, _, _) = bus();
        let mut io = PciConfigIo::new(root.clone());
        cf8(&mut io, 2, 0, 0);
        let mut long = [0u8; 64];
        io.read(0xcf8, 4, &mut long);
        assert_eq!(long, [0xff; 64]);
        let mut two = [0u8; 2];
        io.read(0xcf8, 7, &mut two);
        assert_eq!(two, [0xff; 2]);
        io.write(0xcf8, 4, &[0u8; 64]);
        let mut ecam = PciConfigMmio::new(root);
        ecam.read(0xe000_0000, 2 << 15 | 3, &mut two);
        assert_eq!(two, [0xff; 2]);
        assert_eq!(cfc32(&mut io), 0x1042_1af4, "nothing was written");
    }

    #[test]
    fn vmm_assigns_aligned_bars_and_sizing_works_through_ports() {
        let (root, a, b) = bus();
        assert_eq!(a.lock().unwrap().config.bar_address(0), Some(WINDOW));
        assert_eq!(
            b.lock().unwrap().config.bar_address(0),
            Some(WINDOW + 0x4000)
        );
        let mut io = PciConfigIo::new(root);
        cf8(&mut io, 2, 0, 4);
        assert_eq!(cfc32(&mut io), WINDOW as u32 | 0x4);
        io.write(0xcf8, 4, &u32::MAX.to_le_bytes());
        assert_eq!(cfc32(&mut io), 0xffff_c004);
        io.write(0xcf8, 4, &(WINDOW as u32).to_le_bytes());
        assert_eq!(cfc32(&mut io), WINDOW as u32 | 0x4);
    }

    #[test]
    fn ecam_reaches_the_same_registers() {
        let (root, a, _) = bus();
        let mut ecam = PciConfigMmio::new(root);
        let mut d = [0u8; 4];
        ecam.read(0xe000_0000, 2 << 15, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1042_1af4);
        ecam.read(0xe000_0000, 1 << 15 | 3 << 12, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x7113_8086, "function 3 of slot 1");
        ecam.read(0xe000_0000, 5 << 15 | 2 << 12, &mut d);
        assert_eq!(d, [0xff; 4]);
        ecam.write(0xe000_0000, 2 << 15 | 0x3c, &[0x0a]);
        assert_eq!(a.lock().unwrap().config.read_reg(15) & 0xff, 0x0a);
        // Bus 1 does not exist.
        ecam.read(0xe000_0000, 1 << 20, &mut d);
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn bar_window_routes_to_the_decoding_device_and_follows_a_move() {
        let (root, a, b) = bus();
        let mut window = PciBarWindow::new(root.clone());
        let mut d = [0u8; 1];
        window.read(WINDOW, 0x4003, &mut d);
        assert_eq!(d, [0x03]);
        window.write(WINDOW, 0x10, &[1, 2]);
        assert_eq!(a.lock().unwrap().last, vec![(0, 0x10, vec![1, 2])]);
        assert!(b.lock().unwrap().last.is_empty());
        // The guest moves device 2's BAR; the old address decodes nothing.
        let mut io = PciConfigIo::new(root);
        cf8(&mut io, 3, 0, 4);
        io.write(0xcf8, 4, &((WINDOW + 0x8000) as u32).to_le_bytes());
        window.read(WINDOW, 0x4000, &mut d);
        assert_eq!(d, [0xff]);
        window.write(WINDOW, 0x8004, &[9]);
        assert_eq!(b.lock().unwrap().last, vec![(0, 4, vec![9])]);
        // Memory decoding off: nothing decodes.
        cf8(&mut io, 3, 0, 1);
        io.write(0xcf8, 4, &[0]);
        window.read(WINDOW, 0x8000, &mut d);
        assert_eq!(d, [0xff]);
    }

    /// The PM block moves with PMBA through configuration ports; the port window reaches it
    /// there, and the base, the registers and the timer come back through the bus's
    /// save/restore (`pci-config-io` carries every function's state).
    #[test]
    fn the_pm_block_follows_pmba_and_its_state_survives_save_and_restore() {
        use crate::acpi::pm_timer::PM_TIMER_MASK;
        // The chipset alone (the test's echo functions keep no state).
        let chipset = || PciRootBuilder::new(WINDOW, 0x10_0000).build();
        let root = chipset();
        let mut io = PciConfigIo::new(root.clone());
        let mut ports = PciIoWindow::new(root.clone());
        let timer = |ports: &mut PciIoWindow, port: u64| {
            let mut d = [0u8; 4];
            ports.read(0, port, &mut d);
            u32::from_le_bytes(d)
        };
        assert!(timer(&mut ports, 0xb008) <= PM_TIMER_MASK, "preset base");
        cf8(&mut io, 1, 3, 0x40 / 4);
        io.write(0xcf8, 4, &0xc101u32.to_le_bytes());
        assert_eq!(cfc32(&mut io), 0xc101);
        assert_eq!(timer(&mut ports, 0xb008), u32::MAX, "the old base is gone");
        assert!(timer(&mut ports, 0xc108) <= PM_TIMER_MASK);
        ports.write(0, 0xc102, &[0x20, 0x01]);
        let state = io.save_state().unwrap().unwrap();
        // A fresh bus with the preset base takes the state.
        let fresh = chipset();
        let mut io2 = PciConfigIo::new(fresh.clone());
        let mut ports2 = PciIoWindow::new(fresh);
        assert!(timer(&mut ports2, 0xb008) <= PM_TIMER_MASK);
        io2.restore_state(&state).unwrap();
        assert_eq!(timer(&mut ports2, 0xb008), u32::MAX);
        let mut en = [0u8; 2];
        ports2.read(0, 0xc102, &mut en);
        assert_eq!(en, [0x20, 0x01]);
        assert!(timer(&mut ports2, 0xc108) <= PM_TIMER_MASK);
    }

    #[test]
    fn a_full_window_is_an_error() {
        let mut builder = PciRootBuilder::new(WINDOW, 0x4000);
        builder.add(Echo::shared(1, 0x4000)).unwrap();
        let err = builder.add(Echo::shared(2, 0x1000)).unwrap_err();
        assert!(matches!(err, PciError::WindowFull { size: 0x1000 }));
    }
}
