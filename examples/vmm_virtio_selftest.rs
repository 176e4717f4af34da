//! The devices self-test: one CPL 3 guest runs a polling virtio-pci driver against two
//! virtio-blk disks (one read-write, one read-only raw image), a virtio-rng and a
//! virtio-console; the host then checks what the
//! guest recorded and the image files, has ACPICA's `iasl -d` parse the ACPI tables, and boots
//! a second tiny guest that powers off through ACPI S5, and a third that waits for the ACPI
//! power button (polling the Generic Event Device's register) before doing so. A fourth guest drives a virtio-net NIC
//! on a tap that lives in a network namespace the self-test creates and deletes (root only;
//! the host's own interfaces are never touched): it sends a frame to an `AF_PACKET` socket
//! on the tap and receives one back. One `PASS`/`FAIL` line per check; the exit status is
//! non-zero if any check failed.
//!
//! Run: `cargo run --release --example vmm_virtio_selftest` (needs /dev/kvm; `iasl` from
//! Debian's acpica-tools, which scripts/setup.sh installs).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use kubevirt_vmm::acpi::ged::{GED_EVENT_POWER_BUTTON, GED_MMIO_ADDR};
use kubevirt_vmm::acpi::{AcpiTables, RSDP_ADDR};
use kubevirt_vmm::testguest::netns::{PacketSocket, TestNetns};
use kubevirt_vmm::testguest::programs;
use kubevirt_vmm::testguest::virtio_blk::{self, *};
use kubevirt_vmm::testguest::virtio_net;
use kubevirt_vmm::virtio::block::{Block, RawFile};
use kubevirt_vmm::virtio::console::Console;
use kubevirt_vmm::virtio::net::{Net, NetConfig, Tap, VNET_HDR_LEN};
use kubevirt_vmm::virtio::rng::Rng;
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};
use vm_memory::{Bytes, GuestAddress};

const DISK_SIZE: u64 = 1 << 20;
const RW_SERIAL: &str = "kubevirt-rw-disk";
const RO_SERIAL: &str = "kubevirt-ro-disk";

/// A `Write` the host reads back (the console's output).
#[derive(Clone, Default)]
struct SharedText(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut t) = self.0.lock() {
            t.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            println!("PASS {name}: {detail}");
        } else {
            self.failed += 1;
            println!("FAIL {name}: {detail}");
        }
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("vmm-selftest-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_u32(vm: &Vm, addr: u64) -> u32 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap_or(u32::MAX)
}

fn read_u64(vm: &Vm, addr: u64) -> u64 {
    vm.memory().read_obj(GuestAddress(addr)).unwrap_or(u64::MAX)
}

fn read_bytes(vm: &Vm, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let _ = vm.memory().read_slice(&mut v, GuestAddress(addr));
    v
}

fn serial_field(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.resize(20, 0);
    v
}

fn blk_checks(r: &mut Report, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let rw_path = dir.join("rw.img");
    let ro_path = dir.join("ro.img");
    std::fs::write(&rw_path, vec![0u8; DISK_SIZE as usize])?;
    let ro_content: Vec<u8> = (0..DISK_SIZE).map(|i| (i % 251) as u8).collect();
    std::fs::write(&ro_path, &ro_content)?;

    let console_text = SharedText::default();
    let guest = virtio_blk::virtio_blk_check()?;
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .virtio_device(Box::new(Block::new(
            Box::new(RawFile::open(&rw_path, false)?),
            RW_SERIAL,
        )))
        .virtio_device(Box::new(Block::new(
            Box::new(RawFile::open(&ro_path, true)?),
            RO_SERIAL,
        )))
        .virtio_device(Box::new(Rng::new()))
        .virtio_device(Box::new(Console::new(Box::new(console_text.clone()))?))
        .build()?;
    let start = Instant::now();
    vm.start()?;
    let reason = vm
        .wait_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|| vm.stop());
    r.check(
        "guest driver ran",
        reason == ExitReason::DebugExit { code: 0 },
        format!(
            "{reason} after {:.1} ms",
            start.elapsed().as_secs_f64() * 1e3
        ),
    );
    let found = read_u32(&vm, RESULTS + RES_FOUND);
    let slots = [
        read_u32(&vm, RESULTS + RES_SLOT),
        read_u32(&vm, RESULTS + 0x100 + RES_SLOT),
    ];
    r.check(
        "pci enumeration",
        // Slot 0 is the host bridge, 1 the PIIX ISA bridge and PM function; devices follow.
        found == 2 && slots == [2, 3],
        format!("{found} virtio-blk functions (vendor 1af4, device 1042) found by port I/O at slots {slots:?}"),
    );

    let expected: Vec<u8> = (0..IO_LEN / 4)
        .flat_map(|i| pattern(i).to_le_bytes())
        .collect();
    let offset = (IO_SECTOR * 512) as usize;
    let len = IO_LEN as usize;
    for (k, name, read_only, serial) in [(0u64, "rw", false, RW_SERIAL), (1, "ro", true, RO_SERIAL)]
    {
        let res = RESULTS + 0x100 * k;
        let features = read_u64(&vm, res + RES_FEATURES);
        let status = read_u32(&vm, res + RES_STATUS);
        r.check(
            &format!("blk-{name} feature negotiation"),
            status == 0x0b && features & (1 << 32) != 0 && (features & (1 << 5) != 0) == read_only,
            format!("device features {features:#x}, status after FEATURES_OK {status:#x}"),
        );
        let capacity = read_u64(&vm, res + RES_CAPACITY);
        r.check(
            &format!("blk-{name} size"),
            capacity == DISK_SIZE / 512,
            format!("capacity {capacity} sectors, image {} bytes", DISK_SIZE),
        );
        let id = read_bytes(&vm, res + RES_SERIAL, 20);
        r.check(
            &format!("blk-{name} serial"),
            id == serial_field(serial),
            format!(
                "GET_ID returned {:?}",
                String::from_utf8_lossy(&id).trim_end_matches('\0')
            ),
        );
        let st: Vec<u32> = (0..4)
            .map(|i| read_u32(&vm, res + RES_REQ_STATUS + 4 * i))
            .collect();
        let read_back = read_bytes(&vm, READ_BUF + k * u64::from(IO_LEN), len);
        if read_only {
            r.check(
                "blk-ro rejects writes",
                st[0] == 1,
                format!("write status {} (1 = VIRTIO_BLK_S_IOERR)", st[0]),
            );
            r.check(
                "blk-ro reads its image",
                st[2] == 0 && read_back == ro_content[offset..offset + len],
                format!(
                    "read status {}, {} bytes compared with the image",
                    st[2], len
                ),
            );
        } else {
            r.check(
                "blk-rw write, flush, read back",
                st == [0, 0, 0, 0] && read_u32(&vm, res + RES_COMPARE) == 0 && read_back == expected,
                format!("statuses {st:?} (write, flush, read, get-id), {len} bytes compared in the guest"),
            );
        }
    }
    let rng_found = read_u32(&vm, RESULTS + RES_RNG_FOUND);
    let rng_len = read_u32(&vm, RNG_RESULTS + RES_RNG_USED_LEN);
    let random = read_bytes(&vm, RNG_BUF, RNG_LEN as usize);
    let distinct = random
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let rng_slot = read_u32(&vm, RNG_RESULTS + RES_SLOT);
    r.check(
        "rng returns bytes",
        rng_found == 1 && rng_slot == 4 && rng_len == RNG_LEN && distinct >= 20,
        format!(
            "virtio-rng at slot {rng_slot} (expected 4) filled {rng_len} of {RNG_LEN} bytes, \
             {distinct} distinct values"
        ),
    );
    drop(vm);
    let printed = console_text.0.lock().map(|t| t.clone()).unwrap_or_default();
    r.check(
        "console carries text",
        printed == CONSOLE_TEXT,
        format!(
            "virtio-console transmit queue delivered {:?}",
            String::from_utf8_lossy(&printed)
        ),
    );

    let mut on_disk = vec![0u8; len];
    std::fs::File::open(&rw_path)?.read_exact_at(&mut on_disk, offset as u64)?;
    r.check(
        "blk-rw data in the host file",
        on_disk == expected,
        format!("{len} bytes at offset {offset} of {}", rw_path.display()),
    );
    r.check(
        "blk-ro host file unchanged",
        std::fs::read(&ro_path)? == ro_content,
        "the read-only image is byte-identical",
    );
    let missing = RawFile::open(&dir.join("missing.img"), false);
    r.check(
        "blk unusable backing file",
        missing
            .as_ref()
            .is_err_and(|e| e.to_string().contains("missing.img")),
        match missing {
            Err(e) => e.to_string(),
            Ok(_) => "opened a file that does not exist".into(),
        },
    );
    Ok(())
}

fn acpi_checks(r: &mut Report, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let (t, _) = AcpiTables::build(&kubevirt_vmm::CpuTopology::flat(2));
    for (name, bytes) in [
        ("dsdt", &t.dsdt),
        ("apic", &t.madt),
        ("facp", &t.fadt),
        ("mcfg", &t.mcfg),
        ("xsdt", &t.xsdt),
    ] {
        let dat = dir.join(format!("{name}.dat"));
        std::fs::write(&dat, bytes)?;
        let detail;
        let ok = match Command::new("iasl")
            .arg("-d")
            .arg(&dat)
            .current_dir(dir)
            .output()
        {
            Ok(out) => {
                let log = format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                let clean = out.status.success()
                    && !["Error", "Warning", "Invalid"]
                        .iter()
                        .any(|w| log.contains(w));
                detail = if clean {
                    format!("iasl -d parsed {} bytes cleanly", bytes.len())
                } else {
                    format!("iasl -d: {}", log.trim())
                };
                clean
            }
            Err(e) => {
                detail = format!("cannot run iasl ({e}): install acpica-tools (scripts/setup.sh)");
                false
            }
        };
        r.check(&format!("acpi {name}"), ok, detail);
    }

    let guest = programs::acpi_poweroff(RSDP_ADDR)?;
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Sink))?;
    vm.start()?;
    let reason = vm
        .wait_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|| vm.stop());
    r.check(
        "acpi S5 power-off",
        reason == ExitReason::PowerOff,
        format!("guest found the RSDP at {RSDP_ADDR:#x}, wrote 0x34 to port 0x600: {reason}"),
    );

    let guest = programs::power_button_poll(GED_MMIO_ADDR, RSDP_ADDR)?;
    let vm = Vm::new(guest.vm_config(1, ConsoleConfig::Sink))?;
    vm.start()?;
    let start = Instant::now();
    while read_u64(&vm, programs::POWER_BUTTON_POLLS) < 20
        && start.elapsed() < std::time::Duration::from_secs(30)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = vm.exit_reason();
    let pressed = Instant::now();
    vm.press_power_button()?;
    let reason = vm
        .wait_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|| vm.stop());
    let seen = read_u32(&vm, programs::POWER_BUTTON_EVENTS);
    r.check(
        "acpi power button",
        before.is_none() && reason == ExitReason::PowerOff && seen == GED_EVENT_POWER_BUTTON,
        format!(
            "guest polled the GED register at {GED_MMIO_ADDR:#x}, read {seen:#x} after the press and powered off {:.1} ms later: {reason}",
            pressed.elapsed().as_secs_f64() * 1e3
        ),
    );
    Ok(())
}

const GUEST_MAC: [u8; 6] = [0x02, 0x4b, 0x56, 0x00, 0x00, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x4b, 0x56, 0x00, 0x00, 0xfe];
const TAP: &str = "kvvmm-tap0";

fn net_checks(r: &mut Report) -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        r.check(
            "net",
            false,
            "virtio-net checks need root (a network namespace and a tap)",
        );
        return Ok(());
    }
    let ns = TestNetns::create("kvvmm-selftest")?;
    let _ = ns.exec(
        "sysctl",
        &[
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    );
    let tap = ns.run(|| Tap::open(TAP))??;
    ns.ip(&["link", "set", TAP, "up"])?;
    let socket = ns.run(|| PacketSocket::bind(TAP))??;
    r.check(
        "net tap",
        tap.name() == TAP,
        format!(
            "tap {TAP} (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) in namespace {}",
            ns.name()
        ),
    );
    let net = Net::new(NetConfig {
        mac: GUEST_MAC,
        backend: Box::new(tap),
    });
    let counters = net.counters();
    let guest = virtio_net::virtio_net_check()?;
    let vm = Vm::builder(guest.vm_config(1, ConsoleConfig::Sink))
        .virtio_device(Box::new(net))
        .build()?;
    let start = Instant::now();
    vm.start()?;
    let wanted = |f: &[u8]| {
        f.len() >= 14 && f[6..12] == GUEST_MAC && f[12..14] == virtio_net::ETHERTYPE.to_be_bytes()
    };
    let from_guest = socket.recv_matching(std::time::Duration::from_secs(30), wanted)?;
    let expected = virtio_net::guest_frame(GUEST_MAC);
    r.check(
        "net guest to host",
        from_guest.as_deref() == Some(&expected[..]),
        match &from_guest {
            Some(f) => format!(
                "{}-byte frame from {} on the tap after {:.1} ms",
                f.len(),
                kubevirt_vmm::virtio::net::device::format_mac(&GUEST_MAC),
                start.elapsed().as_secs_f64() * 1e3
            ),
            None => "no frame from the guest within 30 s".into(),
        },
    );
    let mut reply = GUEST_MAC.to_vec();
    reply.extend_from_slice(&HOST_MAC);
    reply.extend_from_slice(&virtio_net::ETHERTYPE.to_be_bytes());
    reply.extend_from_slice(b"kubevirt-vmm virtio-net: hello from the host");
    reply.resize(60, 0);
    socket.send(&reply)?;
    let reason = vm
        .wait_timeout(std::time::Duration::from_secs(60))
        .unwrap_or_else(|| vm.stop());
    let res = virtio_net::RESULTS;
    let mac = read_bytes(&vm, res + virtio_net::RES_MAC, 6);
    let link = read_u32(&vm, res + virtio_net::RES_LINK) & 0xffff;
    let status = read_u32(&vm, res + virtio_net::RES_STATUS);
    r.check(
        "net mac and link",
        mac == GUEST_MAC && link == 1 && status == 0x0b,
        format!(
            "guest read MAC {:02x?} and link status {link} from the configuration space, status {status:#x}",
            mac
        ),
    );
    let id = u64::from(read_u32(&vm, res + virtio_net::RES_RX_ID));
    let len = read_u32(&vm, res + virtio_net::RES_RX_LEN) as usize;
    let got = read_bytes(
        &vm,
        virtio_net::RX_BUFS + id * u64::from(virtio_net::RX_BUF_LEN),
        len.min(virtio_net::RX_BUF_LEN as usize),
    );
    r.check(
        "net host to guest",
        reason == ExitReason::DebugExit { code: 0 }
            && len == VNET_HDR_LEN + reply.len()
            && got.get(VNET_HDR_LEN..) == Some(&reply[..]),
        format!(
            "{reason}; guest received {len} bytes (12-byte header + frame) in rx buffer {id}, counters (rx, rx dropped, tx, tx dropped) {:?}",
            counters.frames()
        ),
    );
    drop(vm);
    drop(ns);
    Ok(())
}

fn main() -> ExitCode {
    let mut r = Report { failed: 0 };
    let dir = match Scratch::new() {
        Ok(d) => d,
        Err(e) => {
            println!("FAIL setup: cannot create a scratch directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = blk_checks(&mut r, &dir.0) {
        r.check("virtio-blk", false, e);
    }
    if let Err(e) = acpi_checks(&mut r, &dir.0) {
        r.check("acpi", false, e);
    }
    if let Err(e) = net_checks(&mut r) {
        r.check("net", false, e);
    }
    if r.failed == 0 {
        ExitCode::SUCCESS
    } else {
        println!("{} check(s) failed", r.failed);
        ExitCode::FAILURE
    }
}
