//! The kubevirt-rs demo guest: a freestanding program entered at CPL 3 with IOPL 3 and an
//! identity map of the low 4 GiB (kubevirt-vmm's direct boot, or the PVH stub of its test-guest
//! toolkit). Entered at CPL 0 it installs an IDT first (`hw::irq`) and drops to CPL 3; then it
//! halts while it waits, woken by COM1, virtio-net's MSI-X, the ACPI power button or its LAPIC
//! timer. Entered at CPL 3 it polls its devices instead.
#![no_std]
#![no_main]

mod cloudinit;
mod dma;
mod files;
mod hw;
mod inet;
mod iso9660;
mod rt;
mod shell;
mod ssh;
mod virtio;

use hw::acpi::Acpi;
use hw::{console, pci};
use virtio::blk::Disk;

const MAX_DISKS: usize = 8;
const DEFAULT_HOSTNAME: &[u8] = b"demo";

/// Everything the guest found.
pub struct System {
    disks: [Option<Disk>; MAX_DISKS],
    cloud_init: Option<cloudinit::CloudInit>,
    host: Option<inet::Host>,
    acpi: Option<Acpi>,
}

impl System {
    fn hostname(&self) -> &[u8] {
        match &self.cloud_init {
            Some(ci) if !ci.hostname().is_empty() => ci.hostname(),
            _ => DEFAULT_HOSTNAME,
        }
    }

    fn list_disks(&mut self) {
        for (i, d) in self.disks.iter_mut().enumerate() {
            let Some(d) = d else { continue };
            console::str("vd");
            console::put(b'a' + i as u8);
            console::str(": ");
            console::dec(d.sectors * 512);
            console::str(" bytes");
            if d.read_only {
                console::str(", read-only");
            }
            if !d.serial().is_empty() {
                console::str(", serial ");
                console::text(d.serial());
            }
            console::str(" (pci 00:");
            console::hex8(d.slot);
            console::str(".0)");
            if let Some(vol) = iso9660::Volume::open(d) {
                console::str(", iso9660 label ");
                console::text(vol.label());
            }
            console::str("\n");
        }
    }

    /// Prints file `path` of the ISO 9660 volume on disk `vdX`.
    fn cat(&mut self, disk: &[u8], path: &[u8]) {
        let index = match disk {
            [b'v', b'd', c @ b'a'..=b'h'] => usize::from(c - b'a'),
            _ => {
                console::str("usage: cat vdX PATH\n");
                return;
            }
        };
        let Some(d) = self.disks[index].as_mut() else {
            console::str("no such disk\n");
            return;
        };
        let Some(mut vol) = iso9660::Volume::open(d) else {
            console::str("not an ISO 9660 volume\n");
            return;
        };
        let Some(file) = vol.find(path).filter(|e| !e.dir) else {
            console::text(path);
            console::str(": no such file\n");
            return;
        };
        let mut buf = [0u8; 8192];
        let n = vol.read(file, &mut buf);
        console::text(&buf[..n]);
        if n > 0 && buf[n - 1] != b'\n' {
            console::str("\n");
        }
    }

    /// Writes a marker to sector 1 of every writable disk, flushes, reads it back.
    fn disk_test(&mut self) {
        const SECTOR: u64 = 1;
        for (i, d) in self.disks.iter_mut().enumerate() {
            let Some(d) = d else { continue };
            let name = b'a' + i as u8;
            console::str("vd");
            console::put(name);
            if d.read_only {
                console::str(": read-only, skipped\n");
                continue;
            }
            let mut marker = [0u8; 512];
            let text = b"kubevirt-rs demo guest wrote this to vd?\n";
            marker[..text.len()].copy_from_slice(text);
            marker[text.len() - 2] = name;
            let mut back = [0u8; 512];
            let ok = d.write(SECTOR, &marker) && d.flush() && d.read(SECTOR, &mut back);
            console::str(if ok && back == marker {
                ": wrote sector 1, flushed, read it back: ok\n"
            } else {
                ": write/flush/read-back of sector 1 FAILED\n"
            });
        }
    }

    fn show_ip(&self) {
        let Some(h) = &self.host else {
            console::str("no network interface\n");
            return;
        };
        console::str("eth0: mac ");
        console::mac(h.nic.mac);
        match h.lease {
            Some(l) => {
                console::str(" inet ");
                console::ip(l.ip);
                console::put(b'/');
                console::dec(u64::from(l.prefix));
                console::str(" gateway ");
                console::ip(l.router);
            }
            None => console::str(" (waiting for DHCP)"),
        }
        console::str(", echo requests answered: ");
        console::dec(h.pings);
        console::str(", http requests answered: ");
        console::dec(h.http_requests);
        console::str(", udp echoes: ");
        console::dec(h.udp_echoes);
        console::str("\n");
    }

    fn reboot(&self) -> ! {
        console::str("rebooting\n");
        if let Some(a) = &self.acpi {
            a.reset();
        }
        console::str("no ACPI reset register: halting here\n");
        loop {
            core::hint::spin_loop();
        }
    }

    fn power_off(&self) -> ! {
        console::str("powering off\n");
        match &self.acpi {
            Some(a) => a.power_off(),
            None => console::str("no ACPI sleep control register: halting here\n"),
        }
        loop {
            core::hint::spin_loop();
        }
    }
}

/// `kernel`: 1 when `_start` ran at CPL 0 and installed the IDT.
extern "C" fn main(start_info: u64, kernel: u64) -> ! {
    rt::zero_bss();
    hw::irq::init(kernel != 0);
    console::str("\nkubevirt-rs demo guest 1.0 (x86_64, CPL 3)\n");
    console::str(if hw::irq::enabled() {
        "irq: LAPIC timer, COM1, power button, virtio-net; halts while idle\n"
    } else {
        "irq: none (entered at CPL 3): polling\n"
    });
    hw::pvh::report(start_info);
    match hw::smbios::SystemInfo::find() {
        Some(info) => {
            let mut text = [0u8; 64];
            console::str("smbios: ");
            let n = info.manufacturer(&mut text);
            console::text(&text[..n]);
            console::str(" system, uuid ");
            console::uuid(info.uuid);
            let n = info.serial(&mut text);
            if n > 0 {
                console::str(", serial ");
                console::text(&text[..n]);
            }
            console::str("\n");
        }
        None => console::str("smbios: none\n"),
    }
    let mut arena = dma::Arena::new();
    let mut sys = System {
        disks: [const { None }; MAX_DISKS],
        cloud_init: None,
        host: None,
        acpi: Acpi::discover(),
    };
    let mut ndisks = 0;
    for (f, vendor, device) in pci::scan() {
        if vendor != virtio::VENDOR {
            continue;
        }
        let Some(t) = virtio::Transport::probe(f) else {
            continue;
        };
        match device {
            virtio::DEVICE_BLOCK if ndisks < MAX_DISKS => {
                sys.disks[ndisks] = Disk::probe(f.slot, &t, &mut arena);
                ndisks += 1;
            }
            virtio::DEVICE_NET if sys.host.is_none() => {
                if let Some(nic) = virtio::net::Nic::probe(f.slot, &t, &mut arena) {
                    console::str("eth0: virtio-net, mac ");
                    console::mac(nic.mac);
                    console::str(" (pci 00:");
                    console::hex8(nic.slot);
                    console::str(".0)");
                    console::str(", asking for an address by DHCP\n");
                    sys.host = Some(inet::Host::new(nic));
                }
            }
            virtio::DEVICE_RNG => console::str("virtio-rng present\n"),
            virtio::DEVICE_CONSOLE => console::str("virtio-console present\n"),
            _ => {}
        }
    }
    sys.list_disks();
    sys.cloud_init = cloudinit::discover(&mut sys.disks);
    match &sys.cloud_init {
        Some(ci) => cloudinit::report(ci),
        None => console::str("cloud-init: no data source\n"),
    }
    if sys.acpi.is_none() {
        console::str("acpi: no tables found; poweroff will not work\n");
    }
    let hostname = sys.hostname();
    let (mut name, n) = ([0u8; 64], hostname.len().min(64));
    name[..n].copy_from_slice(&hostname[..n]);
    if let Some(h) = &mut sys.host {
        h.set_hostname(&name[..n]);
        console::str("http: serving port 80, udp echo port 7\n");
    }
    let keys = sys
        .cloud_init
        .as_ref()
        .map_or(ssh::keys::AuthorizedKeys::new(), |ci| ci.keys);
    let mut server = None;
    if let Some(h) = &mut sys.host {
        server = ssh::Server::new(keys);
        match &server {
            Some(s) => {
                s.report();
                h.ssh_listening = true;
            }
            None => console::str("ssh: the CPU has no RDRAND: no SSH server\n"),
        }
    }
    let mut shell = shell::Shell::new();
    shell.prompt(&sys);
    serve(&mut sys, &mut shell, server.as_mut())
}

/// The main loop: look at what interrupted (everything, the first time round or when
/// polling), then halt until the next interrupt or timeout.
fn serve(sys: &mut System, shell: &mut shell::Shell, mut ssh: Option<&mut ssh::Server>) -> ! {
    use hw::irq;
    let interrupts = irq::enabled();
    let mut pending = irq::ALL;
    let mut rounds = 0u32;
    loop {
        // Reading the GED is an exit to the VMM: polled, only every 16th round.
        let power = if interrupts {
            pending & irq::POWER != 0
        } else {
            rounds % 16 == 0
        };
        if power && sys.acpi.is_some_and(|a| a.power_button_pressed()) {
            console::str("\npower button pressed: shutting down\n");
            sys.power_off();
        }
        if pending & irq::SERIAL != 0 {
            while let Some(b) = console::read() {
                match shell.feed(b, sys) {
                    shell::Action::PowerOff => sys.power_off(),
                    shell::Action::Reboot => sys.reboot(),
                    shell::Action::Exit => shell.prompt(sys),
                    shell::Action::Continue => {}
                }
            }
        }
        // The receive ring is guest memory: looking costs nothing, so always look.
        let mut deadline = None;
        if let Some(h) = &mut sys.host {
            h.poll();
        }
        if let Some(s) = ssh.as_deref_mut() {
            s.pump(sys);
        }
        if let Some(h) = &sys.host {
            deadline = h.next_deadline();
        }
        if interrupts {
            irq::wait(deadline);
            pending = irq::take();
        } else {
            rounds = rounds.wrapping_add(1);
            for _ in 0..64 {
                core::hint::spin_loop();
            }
        }
    }
}
