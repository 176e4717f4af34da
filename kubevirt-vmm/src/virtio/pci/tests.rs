use std::sync::Mutex;

use super::*;
use crate::pci::msix::{MsiMessage, MsiSink};
use crate::virtio::device::{ActivateError, read_config_bytes};

type Activated = Arc<Mutex<Option<(usize, u64)>>>;

/// A device that keeps what activation gave it.
#[derive(Default)]
struct Probe {
    activated: Activated,
    resets: Arc<Mutex<u32>>,
    keep: Vec<DeviceQueue>,
}

impl VirtioDevice for Probe {
    fn device_type(&self) -> u32 {
        4
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn features(&self) -> u64 {
        1 << 5
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&[0xaa, 0xbb, 0xcc, 0xdd], offset, data);
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        *self.activated.lock().unwrap() = Some((ctx.queues.len(), ctx.acked_features));
        self.keep = ctx.queues;
        Ok(())
    }
    fn reset(&mut self) {
        *self.resets.lock().unwrap() += 1;
        self.keep.clear();
    }
}

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn device() -> (VirtioPciDevice, Activated, Arc<Mutex<u32>>) {
    let probe = Probe::default();
    let activated = probe.activated.clone();
    let resets = probe.resets.clone();
    let mut dev = VirtioPciDevice::new(Box::new(probe), memory()).unwrap();
    dev.config_mut().set_bar_address(0, 0xd800_0000).unwrap();
    (dev, activated, resets)
}

fn w(d: &mut VirtioPciDevice, off: u64, v: u64, len: usize) {
    d.write_bar(0, off, &v.to_le_bytes()[..len]);
}

fn r(d: &mut VirtioPciDevice, off: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    d.read_bar(0, off, &mut b[..len]);
    u64::from_le_bytes(b)
}

fn setup_queue(d: &mut VirtioPciDevice, q: u16, base: u64) {
    w(d, 0x16, u64::from(q), 2);
    w(d, 0x18, 8, 2);
    w(d, 0x20, base, 8);
    w(d, 0x28, base + 0x1000, 8);
    w(d, 0x30, base + 0x2000, 8);
    w(d, 0x1c, 1, 2);
}

fn negotiate(d: &mut VirtioPciDevice, features: u64) -> u8 {
    w(d, 0x14, u64::from(status::ACKNOWLEDGE | status::DRIVER), 1);
    w(d, 0x08, 0, 4);
    w(d, 0x0c, features & 0xffff_ffff, 4);
    w(d, 0x08, 1, 4);
    w(d, 0x0c, features >> 32, 4);
    w(
        d,
        0x14,
        u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
        1,
    );
    r(d, 0x14, 1) as u8
}

#[test]
fn ids_and_capabilities_describe_bar0() {
    let (d, _, _) = device();
    let c = d.config();
    assert_eq!(c.read_reg(0), 0x1044_1af4);
    assert_eq!(c.read_reg(2) >> 8, 0xff_00_00);
    assert_eq!(c.read_reg(2) & 0xff, 1, "modern devices have revision >= 1");
    // Walk the capability list like a driver.
    let mut found = Vec::new();
    let mut ptr = (c.read_reg(13) & 0xff) as usize;
    let mut msix = None;
    while ptr != 0 {
        let head = c.read_reg(ptr / 4);
        if head & 0xff == 0x11 {
            msix = Some((head >> 16, c.read_reg(ptr / 4 + 1), c.read_reg(ptr / 4 + 2)));
            ptr = ((head >> 8) & 0xff) as usize;
            continue;
        }
        assert_eq!(head & 0xff, 0x09);
        let kind = (head >> 24) as u8;
        let offset = c.read_reg(ptr / 4 + 2);
        let len = c.read_reg(ptr / 4 + 3);
        let mult = (kind == CAP_NOTIFY).then(|| c.read_reg(ptr / 4 + 4));
        found.push((kind, offset, len, mult));
        ptr = ((head >> 8) & 0xff) as usize;
    }
    assert_eq!(
        found,
        vec![
            (CAP_COMMON, 0, 0x38, None),
            (CAP_ISR, 0x1000, 4, None),
            (CAP_DEVICE, 0x2000, 0x1000, None),
            (CAP_NOTIFY, 0x3000, 0x1000, Some(4)),
        ]
    );
    assert_eq!(
        msix,
        Some((2, 0x4000, 0x6000)),
        "3 vectors, table and PBA in BAR 0"
    );
    let addrs: Vec<u64> = d.notify_addresses().iter().map(|(a, _)| *a).collect();
    assert_eq!(addrs, vec![0xd800_3000, 0xd800_3004]);
}

#[test]
fn handshake_activates_with_acked_features_and_reset_stops_the_device() {
    let (mut d, activated, resets) = device();
    assert_eq!(r(&mut d, 0x04, 4), 1 << 5);
    w(&mut d, 0x00, 1, 4);
    assert_eq!(r(&mut d, 0x04, 4), 1, "VERSION_1 is offered");
    assert_eq!(r(&mut d, 0x12, 2), 2);
    assert_eq!(r(&mut d, 0x2000, 4), 0xddcc_bbaa);
    assert_eq!(r(&mut d, 0x2003, 1), 0xdd);
    let s = negotiate(&mut d, VIRTIO_F_VERSION_1 | 1 << 5);
    assert_ne!(s & status::FEATURES_OK, 0);
    setup_queue(&mut d, 0, 0x1_0000);
    w(&mut d, 0x14, u64::from(s | status::DRIVER_OK), 1);
    assert_eq!(
        *activated.lock().unwrap(),
        Some((2, VIRTIO_F_VERSION_1 | 1 << 5))
    );
    assert_eq!(r(&mut d, 0x14, 1) as u8 & status::DEVICE_NEEDS_RESET, 0);
    // Features are frozen after FEATURES_OK.
    w(&mut d, 0x08, 0, 4);
    w(&mut d, 0x0c, 0, 4);
    assert_eq!(r(&mut d, 0x0c, 4), 1 << 5);
    w(&mut d, 0x14, 0, 1);
    assert_eq!(*resets.lock().unwrap(), 1);
    assert_eq!(r(&mut d, 0x14, 1), 0);
    w(&mut d, 0x16, 0, 2);
    assert_eq!(r(&mut d, 0x1c, 2), 0, "reset disables queues");
}

#[test]
fn features_the_device_did_not_offer_or_legacy_drivers_are_refused() {
    let (mut d, _, _) = device();
    assert_eq!(
        negotiate(&mut d, VIRTIO_F_VERSION_1 | 1 << 6) & status::FEATURES_OK,
        0
    );
    w(&mut d, 0x14, 0, 1);
    assert_eq!(negotiate(&mut d, 1 << 5) & status::FEATURES_OK, 0);
}

#[test]
fn rings_outside_memory_mark_the_device_needing_reset() {
    let (mut d, activated, _) = device();
    let s = negotiate(&mut d, VIRTIO_F_VERSION_1);
    setup_queue(&mut d, 1, 0x4000_0000);
    w(&mut d, 0x14, u64::from(s | status::DRIVER_OK), 1);
    assert!(activated.lock().unwrap().is_none());
    assert_ne!(r(&mut d, 0x14, 1) as u8 & status::DEVICE_NEEDS_RESET, 0);
    // With DRIVER_OK set, the device tells the driver: a configuration change (ISR bit 1).
    assert_eq!(r(&mut d, ISR_OFFSET, 1), 2);
    w(&mut d, 0x14, 0, 1);
    assert_eq!(r(&mut d, 0x14, 1), 0);
}

#[test]
fn notify_writes_signal_the_queue_eventfd_and_isr_reads_clear() {
    let (mut d, _, _) = device();
    let through_userspace = d.userspace_notifies();
    w(&mut d, 0x3004, 1, 2);
    assert_eq!(d.events[1].read().unwrap(), 1);
    assert_eq!(
        through_userspace.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(d.events[0].read().is_err(), "queue 0 was not notified");
    w(&mut d, 0x3ffc, 0, 2);
    d.interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap();
    d.interrupt.trigger(VirtioInterruptType::Config).unwrap();
    assert_eq!(r(&mut d, 0x1000, 1), 3);
    assert_eq!(r(&mut d, 0x1000, 1), 0);
}

#[derive(Default)]
struct Recorded(Mutex<Vec<MsiMessage>>);

impl MsiSink for Recorded {
    fn send(&self, _vector: u16, msg: MsiMessage) -> std::io::Result<()> {
        self.0.lock().unwrap().push(msg);
        Ok(())
    }
}

#[test]
fn msix_vectors_deliver_queue_and_config_interrupts() {
    let sink = Arc::new(Recorded::default());
    let (d, _, _) = device();
    let mut d = d.with_msi_sink(sink.clone());
    // Queue 1 uses vector 2, configuration changes vector 0.
    w(&mut d, 0x10, 0, 2);
    w(&mut d, 0x16, 1, 2);
    w(&mut d, 0x1a, 2, 2);
    assert_eq!(r(&mut d, 0x1a, 2), 2);
    let msg = |v: u32| MsiMessage {
        address: 0xfee0_0000,
        data: 0x40 + v,
    };
    for v in [0u64, 2] {
        w(&mut d, 0x4000 + 16 * v, 0xfee0_0000, 8);
        w(&mut d, 0x4008 + 16 * v, 0x40 + v, 4);
        w(&mut d, 0x400c + 16 * v, 0, 4);
    }
    // Disabled: nothing is sent, nothing pends.
    d.interrupt.trigger(VirtioInterruptType::Queue(1)).unwrap();
    assert!(sink.0.lock().unwrap().is_empty());
    // Enable through the capability's message control (bit 15).
    let cap = d.msix_cap;
    d.write_config_register(cap / 4, 3, &[0x80]);
    d.interrupt.trigger(VirtioInterruptType::Queue(1)).unwrap();
    d.interrupt.trigger(VirtioInterruptType::Config).unwrap();
    d.interrupt.trigger(VirtioInterruptType::Queue(0)).unwrap(); // no vector assigned
    assert_eq!(*sink.0.lock().unwrap(), vec![msg(2), msg(0)]);
    // Masked vector: pending bit, delivered when unmasked.
    w(&mut d, 0x402c, 1, 4);
    d.interrupt.trigger(VirtioInterruptType::Queue(1)).unwrap();
    assert_eq!(r(&mut d, 0x6000, 1), 0b100);
    w(&mut d, 0x402c, 0, 4);
    assert_eq!(sink.0.lock().unwrap().last(), Some(&msg(2)));
    assert_eq!(r(&mut d, 0x6000, 1), 0);
}

/// Records registrations; accepts bases in 0xc000_0000..0xe000_0000.
#[derive(Debug, Default)]
struct Registry(Mutex<Vec<(bool, u64)>>);

impl IoEventRegistrar for Registry {
    fn accepts(&self, base: u64) -> bool {
        (0xc000_0000..0xe000_0000).contains(&base)
    }
    fn register(&self, addr: u64, _event: &EventFd) -> std::io::Result<()> {
        self.0.lock().unwrap().push((true, addr));
        Ok(())
    }
    fn unregister(&self, addr: u64, _event: &EventFd) -> std::io::Result<()> {
        self.0.lock().unwrap().push((false, addr));
        Ok(())
    }
}

#[test]
fn moving_bar0_moves_the_notify_registrations() {
    let (mut d, _, _) = device();
    let queues = d.events.len() as u64;
    let registry = Arc::new(Registry::default());
    d.attach_ioevents(registry.clone()).unwrap();
    let at = |base: u64| (0..queues).map(move |q| base + 0x3000 + 4 * q);
    let log = |r: &Registry| std::mem::take(&mut *r.0.lock().unwrap());
    assert_eq!(
        log(&registry),
        at(0xd800_0000).map(|a| (true, a)).collect::<Vec<_>>()
    );
    // The guest sizes BAR 0 (all ones: no address to catch writes at), then places it anew.
    d.write_config_register(4, 0, &0xffff_ffffu32.to_le_bytes());
    assert_eq!(
        log(&registry),
        at(0xd800_0000).map(|a| (false, a)).collect::<Vec<_>>()
    );
    d.write_config_register(4, 0, &0xd000_0000u32.to_le_bytes());
    assert_eq!(
        log(&registry),
        at(0xd000_0000).map(|a| (true, a)).collect::<Vec<_>>()
    );
    // Writing the same place again changes nothing; other registers are not BARs.
    d.write_config_register(4, 0, &0xd000_0000u32.to_le_bytes());
    d.write_config_register(1, 0, &6u32.to_le_bytes());
    assert!(log(&registry).is_empty());
}

/// Everything a driver reads back from the common configuration (every queue selected in
/// turn), the MSI-X table and PBA, and the configuration space.
fn driver_view(d: &mut VirtioPciDevice) -> Vec<u64> {
    let mut out = Vec::new();
    for q in 0..2u16 {
        w(d, 0x16, u64::from(q), 2);
        for (off, len) in [
            (0x00, 4),
            (0x08, 4),
            (0x10, 2),
            (0x14, 1),
            (0x15, 1),
            (0x18, 2),
            (0x1a, 2),
            (0x1c, 2),
            (0x20, 8),
            (0x28, 8),
            (0x30, 8),
        ] {
            out.push(r(d, off, len));
        }
        w(d, 0x08, 1, 4);
        out.push(r(d, 0x0c, 4));
        w(d, 0x08, 0, 4);
        out.push(r(d, 0x0c, 4));
    }
    for off in (MSIX_TABLE_OFFSET..MSIX_TABLE_OFFSET + 3 * 16).step_by(4) {
        out.push(r(d, off, 4));
    }
    out.push(r(d, MSIX_PBA_OFFSET, 8));
    out.extend((0..64).map(|reg| u64::from(d.config().read_reg(reg))));
    out
}

#[test]
fn a_configured_device_comes_back_as_the_driver_left_it() {
    let (mut d, _, _) = device();
    assert_ne!(negotiate(&mut d, VIRTIO_F_VERSION_1 | 1 << 5) & status::FEATURES_OK, 0);
    setup_queue(&mut d, 0, 0x1_0000);
    setup_queue(&mut d, 1, 0x2_0000);
    w(&mut d, 0x10, 2, 2); // config vector
    w(&mut d, 0x16, 1, 2);
    w(&mut d, 0x1a, 1, 2); // queue 1 vector
    // MSI-X: program and unmask vector 1, enable.
    w(&mut d, MSIX_TABLE_OFFSET + 16, 0xfee0_0000, 4);
    w(&mut d, MSIX_TABLE_OFFSET + 24, 0x41, 4);
    w(&mut d, MSIX_TABLE_OFFSET + 28, 0, 4);
    let reg = d.msix_cap / 4;
    d.write_config_register(reg, 2, &0x8000u16.to_le_bytes());
    // Taken first: reading the view selects queues and feature words.
    let state = d.save_state().unwrap();
    let before = driver_view(&mut d);

    let (mut fresh, activated, _) = device();
    fresh.config_mut().set_bar_address(0, 0xd900_0000).unwrap();
    fresh.restore_state(&state).unwrap();
    assert_eq!(driver_view(&mut fresh), before);
    assert_eq!(fresh.config().bar_address(0), Some(0xd800_0000), "BAR 0 moved back");
    assert!(activated.lock().unwrap().is_none(), "not started: nothing to start");
}

#[test]
fn a_started_device_that_cannot_pause_refuses_the_snapshot() {
    let (mut d, activated, _) = device();
    negotiate(&mut d, VIRTIO_F_VERSION_1);
    setup_queue(&mut d, 0, 0x1_0000);
    setup_queue(&mut d, 1, 0x2_0000);
    w(&mut d, 0x14, 0x0f, 1);
    assert!(activated.lock().unwrap().is_some());
    let err = d.save_state().unwrap_err();
    assert!(matches!(err, DeviceStateError::Unsupported(_)), "{err}");
}

#[test]
fn a_damaged_state_is_refused_naming_the_field() {
    let (mut d, _, _) = device();
    let state = d.save_state().unwrap();
    let (mut fresh, _, _) = device();
    let err = fresh.restore_state(&state[..state.len() - 3]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let mut longer = state.clone();
    longer.push(0);
    assert!(fresh.restore_state(&longer).is_err());
}

proptest::proptest! {
    /// Whatever bytes a damaged snapshot holds, restoring them is an error or a state, never
    /// a panic.
    #[test]
    fn any_bytes_restore_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        let (mut d, _, _) = device();
        let _ = d.restore_state(&bytes);
    }

    /// A saved state with one byte changed either restores or is refused, never panics.
    #[test]
    fn a_flipped_byte_restores_without_panicking(at in 0usize..4096, bit in 0u8..8) {
        let (mut d, _, _) = device();
        let mut state = d.save_state().unwrap();
        let at = at % state.len();
        state[at] ^= 1 << bit;
        let (mut fresh, _, _) = device();
        let _ = fresh.restore_state(&state);
    }
}
