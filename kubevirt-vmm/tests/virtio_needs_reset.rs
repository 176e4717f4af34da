//! A broken device is reported to the guest as virtio 1.2, 2.1.2 says, and a reset repairs it.
//!
//! A CPL 3 guest (the `script` test guest, playing the driver access by access) sets up
//! virtio-blk and virtio-net (one VM), virtio-rng and virtio-console (another) with MSI-X on
//! and the configuration vector masked, then hands each a descriptor chain the spec forbids:
//! blk a descriptor loop, net a transmit buffer far outside RAM, rng a `next` past the
//! table, console a transmit loop. Each device must set `DEVICE_NEEDS_RESET` (DRIVER_OK still set), raise ISR bit
//! 1 (configuration change) and the configuration vector — its pending bit while masked; once
//! unmasked the MSI reaches vCPU 0's LAPIC IRR (the guest runs with IF = 0, so the vector stays
//! requested where `KVM_GET_LAPIC` shows it). The guest then resets the device (status 0),
//! sets it up again, and a valid request works: blk answers GET_ID, net sends the frame to the
//! host, rng fills a buffer, console writes a line to the host (and nothing of the loop).

mod common;

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Datagram, Recorder, marks_of};
use kubevirt_vmm::arch::lapic;
use kubevirt_vmm::pci::PCI_MMCONFIG_START;
use kubevirt_vmm::testguest::REPORT_PORT;
use kubevirt_vmm::testguest::script::{self, SCRIPT_ADDR, Script, Width};
use kubevirt_vmm::testguest::virtio_pci::{
    VIRTIO_BLK_PCI_ID, VIRTIO_CONSOLE_PCI_ID, VIRTIO_NET_PCI_ID, VIRTIO_RNG_PCI_ID,
};
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::virtio::console::Console;
use kubevirt_vmm::virtio::net::{Net, NetConfig};
use kubevirt_vmm::virtio::pci::{ISR_OFFSET, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, NOTIFY_OFFSET};
use kubevirt_vmm::virtio::rng::Rng;
use kubevirt_vmm::virtio::status;
use kubevirt_vmm::{ConsoleConfig, ExitReason, VcpuSnapshot, Vm};
use vm_memory::{Bytes, GuestAddress};

/// Queue entries the guest sets up.
const QUEUE_SIZE: u16 = 16;
/// blk's rings and buffers, then net's (each queue: descriptors, +0x1000 avail, +0x2000 used).
const BLK_AREA: u64 = 0x34_0000;
const NET_AREA: u64 = 0x36_0000;
/// rng's, console's (in the second VM).
const RNG_AREA: u64 = 0x38_0000;
const CONSOLE_AREA: u64 = 0x3a_0000;
/// The flag the host sets once it has looked at the LAPIC: the guest then exits.
const RELEASE: u64 = 0x3f_f000;
const BLK_VECTOR: u32 = 0x51;
const NET_VECTOR: u32 = 0x62;
const RNG_VECTOR: u32 = 0x53;
const CONSOLE_VECTOR: u32 = 0x64;
const SERIAL: &str = "NEEDS-RESET-1";
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
/// What the guest sends once net works again.
const MARKER: &[u8] = b"sent after the reset";
/// What the guest writes to the console's malformed chain, and once it works again.
const LOOPED: &[u8] = b"looped!";
const CONSOLE_LINE: &[u8] = b"console after the reset\n";

/// Console output the test keeps.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A virtio function as the host found it: where its config space, BAR 0 and MSI-X
/// capability are.
struct Function {
    config: u64,
    bar0: u64,
    msix_cap: u64,
}

fn read32(vm: &Vm, addr: u64) -> u32 {
    let mut v = [0u8; 4];
    vm.buses().mmio.read(addr, &mut v);
    u32::from_le_bytes(v)
}

fn function(vm: &Vm, id: u32) -> Function {
    let config = (0..32u64)
        .map(|slot| PCI_MMCONFIG_START + (slot << 15))
        .find(|&f| read32(vm, f) == id)
        .unwrap_or_else(|| panic!("no function {id:#x} on bus 0"));
    let bar0 =
        (u64::from(read32(vm, config + 0x14)) << 32) | u64::from(read32(vm, config + 0x10) & !0xf);
    let mut cap = u64::from(read32(vm, config + 0x34) & 0xff);
    while read32(vm, config + cap) & 0xff != 0x11 {
        cap = u64::from((read32(vm, config + cap) >> 8) & 0xff);
        assert_ne!(cap, 0, "function {id:#x} has an MSI-X capability");
    }
    Function {
        config,
        bar0,
        msix_cap: cap,
    }
}

fn descriptor(addr: u64, len: u32, flags: u16, next: u16) -> Vec<u8> {
    let mut d = addr.to_le_bytes().to_vec();
    d.extend_from_slice(&len.to_le_bytes());
    d.extend_from_slice(&flags.to_le_bytes());
    d.extend_from_slice(&next.to_le_bytes());
    d
}

/// The guest's driver steps for one function.
struct Driver<'a> {
    s: &'a mut Script,
    f: &'a Function,
}

impl Driver<'_> {
    fn reg(&mut self, offset: u64, width: Width, value: u64) {
        self.s.write(self.f.bar0 + offset, width, value);
    }

    /// MSI-X on, entry 0 (the configuration vector) sending `vector` to APIC 0, masked.
    fn msix(&mut self, vector: u32) {
        let (config, cap) = (self.f.config, self.f.msix_cap);
        self.s.write(config + cap + 2, Width::Word, 0x8000);
        self.reg(MSIX_TABLE_OFFSET, Width::Qword, 0xfee0_0000);
        self.reg(MSIX_TABLE_OFFSET + 8, Width::Dword, u64::from(vector));
        self.reg(MSIX_TABLE_OFFSET + 12, Width::Dword, 1);
    }

    /// Reset, VERSION_1 only, configuration changes on entry 0, `queues` (index, rings) with
    /// fresh rings and no vector of their own, DRIVER_OK.
    fn init(&mut self, queues: &[(u16, u64)]) {
        self.reg(0x14, Width::Byte, 0);
        self.reg(
            0x14,
            Width::Byte,
            u64::from(status::ACKNOWLEDGE | status::DRIVER),
        );
        self.reg(0x08, Width::Dword, 1);
        self.reg(0x0c, Width::Dword, 1);
        self.reg(0x08, Width::Dword, 0);
        self.reg(0x0c, Width::Dword, 0);
        self.reg(0x14, Width::Byte, 0x0b);
        self.reg(0x10, Width::Word, 0);
        for &(queue, rings) in queues {
            self.s.write(rings + 0x1000, Width::Qword, 0);
            self.s.write(rings + 0x2000, Width::Qword, 0);
            self.reg(0x16, Width::Word, u64::from(queue));
            self.reg(0x18, Width::Word, u64::from(QUEUE_SIZE));
            self.reg(0x1a, Width::Word, 0xffff);
            self.reg(0x20, Width::Qword, rings);
            self.reg(0x28, Width::Qword, rings + 0x1000);
            self.reg(0x30, Width::Qword, rings + 0x2000);
            self.reg(0x1c, Width::Word, 1);
        }
        self.reg(0x14, Width::Byte, 0x0f);
    }

    /// Descriptors from 0 at `rings`, head 0 made available, the queue notified.
    fn offer(&mut self, queue: u16, rings: u64, descriptors: &[Vec<u8>]) {
        self.s.write_bytes(rings, &descriptors.concat());
        self.s.write(rings + 0x1004, Width::Word, 0);
        self.s.write(rings + 0x1002, Width::Word, 1);
        self.reg(
            NOTIFY_OFFSET + 4 * u64::from(queue),
            Width::Word,
            u64::from(queue),
        );
    }

    /// Reports: the status once DEVICE_NEEDS_RESET shows, the ISR, the PBA with the vector
    /// masked, the PBA after unmasking it, the status after the reset (which follows).
    fn expect_broken_then_reset(&mut self) {
        self.s.poll(
            self.f.bar0 + 0x14,
            Width::Byte,
            u32::from(status::DEVICE_NEEDS_RESET),
            u32::from(status::DEVICE_NEEDS_RESET),
        );
        self.s.read(self.f.bar0 + ISR_OFFSET, Width::Byte);
        self.s.read(self.f.bar0 + MSIX_PBA_OFFSET, Width::Dword);
        self.reg(MSIX_TABLE_OFFSET + 12, Width::Dword, 0);
        self.s.read(self.f.bar0 + MSIX_PBA_OFFSET, Width::Dword);
        self.reg(0x14, Width::Byte, 0);
        self.s.read(self.f.bar0 + 0x14, Width::Byte);
    }
}

/// The reports of [`Driver::expect_broken_then_reset`].
fn check_broken_then_reset(device: &str, r: &[u32]) {
    let needs_reset = u32::from(status::DEVICE_NEEDS_RESET | status::DRIVER_OK);
    assert_eq!(
        r[0] & needs_reset,
        needs_reset,
        "{device}: status {:#x} says DRIVER_OK and DEVICE_NEEDS_RESET",
        r[0]
    );
    assert_ne!(
        r[1] & 2,
        0,
        "{device}: ISR {:#x} has the configuration change bit",
        r[1]
    );
    assert_eq!(
        r[2] & 1,
        1,
        "{device}: the masked configuration vector is pending (PBA {:#x})",
        r[2]
    );
    assert_eq!(
        r[3] & 1,
        0,
        "{device}: unmasking delivered it (PBA {:#x})",
        r[3]
    );
    assert_eq!(r[4], 0, "{device}: the reset cleared the status");
}

/// Runs script `s` in `vm` (LAPIC enabled for the guest), waits for its reports, takes vCPU 0's
/// snapshot (with the LAPIC) while the guest waits, then lets it exit; returns the reports and
/// the snapshot.
fn run(vm: &Vm, report: &Arc<Mutex<Recorder>>, mut s: Script) -> (Vec<u32>, VcpuSnapshot) {
    s.poll(RELEASE, Width::Dword, 1, 1);
    let expected = s.reports() - 1;
    vm.memory()
        .write_slice(&s.bytes().unwrap(), GuestAddress(SCRIPT_ADDR))
        .unwrap();
    // The guest never enables its LAPIC (that needs CPL 0): do it for it.
    let mut state = vm.vcpu_lapic(0).unwrap();
    lapic::software_enable(&mut state);
    vm.set_vcpu_lapic(0, &state).unwrap();
    vm.start().unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while marks_of(report).len() < expected {
        if Instant::now() > deadline || vm.wait_timeout(Duration::from_millis(20)).is_some() {
            let state = vm.state();
            vm.stop();
            panic!(
                "the guest reported {:?} of {expected} values (state {state:?})",
                marks_of(report)
            );
        }
    }
    vm.pause().unwrap();
    let snap = vm.vcpu_snapshot(0).expect("a paused vCPU has a snapshot");
    vm.resume().unwrap();
    assert_eq!(snap.regs.rflags & 0x200, 0, "the guest runs with IF = 0");
    assert_eq!(snap.sregs.cs.selector & 3, 3, "the guest runs at CPL 3");
    vm.memory().write_obj(1u32, GuestAddress(RELEASE)).unwrap();
    assert_eq!(common::wait(vm), ExitReason::DebugExit { code: 0 });

    (marks_of(report), snap)
}

#[test]
fn a_malformed_chain_sets_needs_reset_notifies_and_a_reset_repairs_the_device() {
    let dir = kubevirt_testsupport::tempdir("needs-reset");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    theirs.set_nonblocking(true).unwrap();
    let report = Recorder::shared(0);
    let guest = script::script().unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .pio_device(REPORT_PORT, 4, report.clone())
        .virtio_device(Box::new(Block::new(
            Box::new(RawFile::open(&disk, false).unwrap()),
            SERIAL,
        )))
        .virtio_device(Box::new(Net::new(NetConfig {
            mac: [0x52, 0x54, 0, 0, 0, 1],
            backend: Box::new(Datagram(theirs)),
        })))
        .build()
        .unwrap();
    let (blk, net) = (
        function(&vm, VIRTIO_BLK_PCI_ID),
        function(&vm, VIRTIO_NET_PCI_ID),
    );

    let mut s = Script::new();
    // blk: a loop (header -> data -> header ...), then GET_ID after the reset.
    let (rings, hdr, buf, stat) = (
        BLK_AREA,
        BLK_AREA + 0x8000,
        BLK_AREA + 0x9000,
        BLK_AREA + 0xa000,
    );
    let mut d = Driver { s: &mut s, f: &blk };
    d.msix(BLK_VECTOR);
    d.init(&[(0, rings)]);
    d.s.write(hdr, Width::Qword, 0); // VIRTIO_BLK_T_IN, sector 0
    d.s.write(hdr + 8, Width::Qword, 0);
    d.offer(
        0,
        rings,
        &[
            descriptor(hdr, 16, F_NEXT, 1),
            descriptor(buf, 512, F_WRITE | F_NEXT, 0),
        ],
    );
    d.expect_broken_then_reset();
    d.init(&[(0, rings)]);
    d.s.write(hdr, Width::Qword, 8); // VIRTIO_BLK_T_GET_ID
    d.s.write(stat, Width::Byte, 0xff);
    d.offer(
        0,
        rings,
        &[
            descriptor(hdr, 16, F_NEXT, 1),
            descriptor(buf, 20, F_WRITE | F_NEXT, 2),
            descriptor(stat, 1, F_WRITE, 0),
        ],
    );
    d.s.poll(rings + 0x2002, Width::Word, 0xffff, 1);
    d.s.read(stat, Width::Byte);
    d.s.read(buf, Width::Dword);
    d.s.read(blk.bar0 + 0x14, Width::Byte);

    // net: a transmit buffer at 64 GiB (the VM has 4 MiB), then a frame after the reset.
    let (rx, tx, frame_at) = (NET_AREA, NET_AREA + 0x4000, NET_AREA + 0x8000);
    let mut d = Driver { s: &mut s, f: &net };
    d.msix(NET_VECTOR);
    d.init(&[(0, rx), (1, tx)]);
    d.offer(1, tx, &[descriptor(64 << 30, 64, 0, 0)]);
    d.expect_broken_then_reset();
    d.init(&[(0, rx), (1, tx)]);
    let mut frame = vec![0u8; 12]; // virtio-net header
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.extend_from_slice(MARKER);
    d.s.write_bytes(frame_at, &frame);
    d.offer(1, tx, &[descriptor(frame_at, frame.len() as u32, 0, 0)]);
    d.s.poll(tx + 0x2002, Width::Word, 0xffff, 1);
    d.s.read(net.bar0 + 0x14, Width::Byte);

    let (r, snap) = run(&vm, &report, s);
    let (b, n) = (&r[..9], &r[9..16]);
    check_broken_then_reset("virtio-blk", &b[..5]);
    assert_eq!(b[5], 1, "virtio-blk: GET_ID completed after the reset");
    assert_eq!(b[6], 0, "virtio-blk: GET_ID succeeded");
    assert_eq!(
        b[7].to_le_bytes(),
        SERIAL.as_bytes()[..4],
        "virtio-blk: the serial"
    );
    assert_eq!(b[8], 0x0f, "virtio-blk: healthy again");
    check_broken_then_reset("virtio-net", &n[..5]);
    assert_eq!(n[5], 1, "virtio-net: the frame completed after the reset");
    assert_eq!(n[6], 0x0f, "virtio-net: healthy again");
    let mut got = [0u8; 128];
    let len = ours.recv(&mut got).expect("the frame sent after the reset");
    assert_eq!(
        &got[..len],
        &frame[..],
        "the frame, its header zeroed (it was)"
    );
    ours.set_nonblocking(true).unwrap();
    assert!(
        ours.recv(&mut got).is_err(),
        "nothing from the malformed chain was sent"
    );
    for vector in [BLK_VECTOR, NET_VECTOR] {
        assert!(
            lapic::irr_bit(&snap.lapic, vector as u8),
            "the configuration vector {vector:#x} reached the LAPIC"
        );
    }
}

#[test]
fn rng_and_console_given_a_malformed_chain_need_a_reset_and_work_after_it() {
    let output = Output::default();
    let report = Recorder::shared(0);
    let guest = script::script().unwrap();
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .pio_device(REPORT_PORT, 4, report.clone())
        .virtio_device(Box::new(Rng::new()))
        .virtio_device(Box::new(Console::new(Box::new(output.clone())).unwrap()))
        .build()
        .unwrap();
    let (rng, console) = (
        function(&vm, VIRTIO_RNG_PCI_ID),
        function(&vm, VIRTIO_CONSOLE_PCI_ID),
    );

    let mut s = Script::new();
    // rng: a writable buffer whose `next` (40) is past the 16-entry table, then 32 random
    // bytes after the reset.
    let (rings, buf) = (RNG_AREA, RNG_AREA + 0x8000);
    let mut d = Driver { s: &mut s, f: &rng };
    d.msix(RNG_VECTOR);
    d.init(&[(0, rings)]);
    d.offer(0, rings, &[descriptor(buf, 32, F_WRITE | F_NEXT, 40)]);
    d.expect_broken_then_reset();
    d.init(&[(0, rings)]);
    d.offer(0, rings, &[descriptor(buf, 32, F_WRITE, 0)]);
    d.s.poll(rings + 0x2002, Width::Word, 0xffff, 1);
    d.s.read(rings + 0x2008, Width::Dword);
    d.s.read(rng.bar0 + 0x14, Width::Byte);

    // console: a transmit loop (0 -> 1 -> 0 ...) over LOOPED, then a line after the reset.
    let (rx, tx, data, line) = (
        CONSOLE_AREA,
        CONSOLE_AREA + 0x4000,
        CONSOLE_AREA + 0x8000,
        CONSOLE_AREA + 0x9000,
    );
    let mut d = Driver {
        s: &mut s,
        f: &console,
    };
    d.msix(CONSOLE_VECTOR);
    d.init(&[(0, rx), (1, tx)]);
    d.s.write_bytes(data, LOOPED);
    let looped = LOOPED.len() as u32;
    d.offer(
        1,
        tx,
        &[
            descriptor(data, looped, F_NEXT, 1),
            descriptor(data, looped, F_NEXT, 0),
        ],
    );
    d.expect_broken_then_reset();
    d.init(&[(0, rx), (1, tx)]);
    d.s.write_bytes(line, CONSOLE_LINE);
    d.offer(1, tx, &[descriptor(line, CONSOLE_LINE.len() as u32, 0, 0)]);
    d.s.poll(tx + 0x2002, Width::Word, 0xffff, 1);
    d.s.read(console.bar0 + 0x14, Width::Byte);

    let (r, snap) = run(&vm, &report, s);
    let (g, c) = (&r[..8], &r[8..15]);
    check_broken_then_reset("virtio-rng", &g[..5]);
    assert_eq!(g[5], 1, "virtio-rng: the request completed after the reset");
    assert_eq!(g[6], 32, "virtio-rng: 32 bytes given");
    assert_eq!(g[7], 0x0f, "virtio-rng: healthy again");
    check_broken_then_reset("virtio-console", &c[..5]);
    assert_eq!(
        c[5], 1,
        "virtio-console: the line completed after the reset"
    );
    assert_eq!(c[6], 0x0f, "virtio-console: healthy again");
    assert_eq!(
        String::from_utf8_lossy(&output.0.lock().unwrap()),
        String::from_utf8_lossy(CONSOLE_LINE),
        "the line after the reset, nothing of the loop"
    );
    for vector in [RNG_VECTOR, CONSOLE_VECTOR] {
        assert!(
            lapic::irr_bit(&snap.lapic, vector as u8),
            "the configuration vector {vector:#x} reached the LAPIC"
        );
    }
}
