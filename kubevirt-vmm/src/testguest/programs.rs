//! Ready-made test guests. Each says what it does, what it reports and how it ends.

use iced_x86::IcedError;
use iced_x86::code_asm::{
    CodeAssembler, al, byte_ptr, dword_ptr, dx, eax, ebx, ecx, edi, edx, qword_ptr, r8d, r9d, r10d,
    rax, rbx, rcx, rdi,
};

use super::{GUEST_DATA_ADDR, GuestAsm, TestGuest, TestGuestError};

/// The greeting [`hello`] prints.
pub const HELLO_TEXT: &str = "Hello from the guest\n";

/// Prints [`HELLO_TEXT`] on COM1 and exits with code 0.
pub fn hello() -> Result<TestGuest, TestGuestError> {
    print_and_exit("hello", HELLO_TEXT.as_bytes(), 0)
}

/// Prints `text` on COM1 and exits with `code`.
pub fn print_and_exit(
    name: &'static str,
    text: &[u8],
    code: u8,
) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new(name)?;
    g.print(text)?;
    g.exit(code)?;
    g.finish()
}

/// Writes the dword `value` to MMIO `write_addr`, reads a dword from MMIO `read_addr`, reports
/// what it read on the report port, exits 0.
pub fn mmio_round_trip(
    write_addr: u64,
    value: u32,
    read_addr: u64,
) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("mmio_round_trip")?;
    let r = (|| {
        let a = g.a();
        a.mov(rbx, write_addr)?;
        a.mov(dword_ptr(rbx), value)?;
        a.mov(rbx, read_addr)?;
        a.mov(eax, dword_ptr(rbx))
    })();
    g.check(r)?;
    g.report_eax()?;
    g.exit(0)?;
    g.finish()
}

/// Offsets in [`GUEST_DATA_ADDR`] the rendezvous uses: one "arrived" flag per vCPU, then a
/// "done" flag of vCPU 1.
const RENDEZVOUS_DONE: i32 = 16;

/// For two vCPUs. Each sets its "arrived" flag and spins until the other's is set, so both
/// must be running at the same time; each then reports its index (RDI) on the report port.
/// vCPU 1 then sets a "done" flag and spins; vCPU 0 waits for it and exits 0. If the vCPUs
/// do not run concurrently the guest never exits.
pub fn rendezvous() -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("rendezvous")?;
    let r = (|| {
        let a = g.a();
        a.mov(rbx, GUEST_DATA_ADDR)?;
        a.mov(qword_ptr(rbx + rdi * 8), 1)?;
        a.mov(rax, 1u64)?;
        a.sub(rax, rdi)?;
        let mut wait = a.create_label();
        a.set_label(&mut wait)?;
        a.pause()?;
        a.cmp(qword_ptr(rbx + rax * 8), 0)?;
        a.je(wait)?;
        a.mov(eax, edi)
    })();
    g.check(r)?;
    g.report_eax()?;
    let mut ap = g.a().create_label();
    let r = (|| {
        let a = g.a();
        a.test(rdi, rdi)?;
        a.jnz(ap)?;
        let mut wait_done = a.create_label();
        a.set_label(&mut wait_done)?;
        a.pause()?;
        a.cmp(qword_ptr(rbx + RENDEZVOUS_DONE), 0)?;
        a.je(wait_done)
    })();
    g.check(r)?;
    g.exit(0)?;
    let r = (|| {
        let a = g.a();
        a.set_label(&mut ap)?;
        a.mov(qword_ptr(rbx + RENDEZVOUS_DONE), 1)?;
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.pause()?;
        a.jmp(spin)
    })();
    g.check(r)?;
    g.finish()
}

/// [`counter`]'s loop counter, a u64 in guest memory.
pub const COUNTER_ADDR: u64 = GUEST_DATA_ADDR + 0x100;
/// [`counter`] leaves its loop once the host writes non-zero here.
pub const COUNTER_RELEASE_ADDR: u64 = GUEST_DATA_ADDR + 0x108;
/// Each vCPU running [`counter`] increments this (atomically) once when it starts.
pub const COUNTER_BOOTS_ADDR: u64 = GUEST_DATA_ADDR + 0x110;

/// Counts in RCX, storing each value at [`COUNTER_ADDR`], until the host sets
/// [`COUNTER_RELEASE_ADDR`]; then exits 0. Lets a test watch guest progress and registers.
pub fn counter() -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("counter")?;
    let r = (|| {
        let a = g.a();
        a.mov(rbx, GUEST_DATA_ADDR)?;
        a.inc(qword_ptr(
            rbx + (COUNTER_BOOTS_ADDR - GUEST_DATA_ADDR) as i32,
        ))?;
        count_until_released(a)
    })();
    g.check(r)?;
    g.exit(0)?;
    g.finish()
}

/// Counts in `rcx`, storing each value at [`COUNTER_ADDR`], until [`COUNTER_RELEASE_ADDR`] is
/// set; `rbx` holds [`GUEST_DATA_ADDR`].
fn count_until_released(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.xor(rcx, rcx)?;
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    a.inc(rcx)?;
    a.mov(
        qword_ptr(rbx + (COUNTER_ADDR - GUEST_DATA_ADDR) as i32),
        rcx,
    )?;
    a.cmp(
        qword_ptr(rbx + (COUNTER_RELEASE_ADDR - GUEST_DATA_ADDR) as i32),
        0,
    )?;
    a.je(top)
}

/// Writes one byte into every 4 KiB page of `[start, start + len)`, then runs [`counter`]'s
/// loop (counting at [`COUNTER_ADDR`] until [`COUNTER_RELEASE_ADDR`] is set, then exiting 0):
/// a guest with a known amount of RAM in use that is still running, e.g. to snapshot.
pub fn touch_and_count(start: u64, len: u64) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("touch_and_count")?;
    let r = (|| {
        let a = g.a();
        a.mov(rbx, start)?;
        a.mov(rcx, (len / 4096).max(1))?;
        let mut touch = a.create_label();
        a.set_label(&mut touch)?;
        a.mov(byte_ptr(rbx), 1)?;
        a.add(rbx, 4096)?;
        a.dec(rcx)?;
        a.jnz(touch)?;
        a.mov(rbx, GUEST_DATA_ADDR)?;
        count_until_released(a)
    })();
    g.check(r)?;
    g.exit(0)?;
    g.finish()
}

/// Keeps dirtying RAM: pass after pass writes the pass number (a u64) at the start of every
/// 4 KiB page of `[start, start + len)`, storing the number of finished passes at
/// [`COUNTER_ADDR`], until [`COUNTER_RELEASE_ADDR`] is set; then exits 0. Increments
/// [`COUNTER_BOOTS_ADDR`] once when it starts. At any instant the pages hold `n + 1` up to
/// some page and `n` after it, `n` being the counter: a guest to live-migrate whose memory a
/// test can check for consistency.
pub fn dirty_loop(start: u64, len: u64) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("dirty_loop")?;
    let r = (|| {
        let a = g.a();
        a.mov(rbx, GUEST_DATA_ADDR)?;
        a.inc(qword_ptr(
            rbx + (COUNTER_BOOTS_ADDR - GUEST_DATA_ADDR) as i32,
        ))?;
        a.mov(
            rcx,
            qword_ptr(rbx + (COUNTER_ADDR - GUEST_DATA_ADDR) as i32),
        )?;
        let mut pass = a.create_label();
        a.set_label(&mut pass)?;
        a.inc(rcx)?;
        a.mov(rdi, start)?;
        a.mov(rax, (len / 4096).max(1))?;
        let mut touch = a.create_label();
        a.set_label(&mut touch)?;
        a.mov(qword_ptr(rdi), rcx)?;
        a.add(rdi, 4096)?;
        a.dec(rax)?;
        a.jnz(touch)?;
        a.mov(
            qword_ptr(rbx + (COUNTER_ADDR - GUEST_DATA_ADDR) as i32),
            rcx,
        )?;
        a.cmp(
            qword_ptr(rbx + (COUNTER_RELEASE_ADDR - GUEST_DATA_ADDR) as i32),
            0,
        )?;
        a.je(pass)
    })();
    g.check(r)?;
    g.exit(0)?;
    g.finish()
}

/// Asks the i8042 for a CPU reset (command 0xFE on port 0x64); exits 1 if that returns.
pub fn i8042_reset() -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("i8042_reset")?;
    let r = (|| {
        let a = g.a();
        a.mov(al, 0xfe_u32)?;
        a.out(0x64_u32, al)
    })();
    g.check(r)?;
    g.exit(1)?;
    g.finish()
}

/// Prints a line, then executes `ud2`: with no IDT the #UD escalates to a triple fault.
pub fn invalid_opcode() -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("invalid_opcode")?;
    g.print(b"about to fault\n")?;
    let r = g.a().ud2();
    g.check(r)?;
    g.finish()
}

/// Reads from `addr`, which the boot page tables do not map (at or above 4 GiB): the page
/// fault escalates to a triple fault.
pub fn page_fault(addr: u64) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("page_fault")?;
    let r = (|| {
        let a = g.a();
        a.mov(rbx, addr)?;
        a.mov(al, byte_ptr(rbx))
    })();
    g.check(r)?;
    g.exit(1)?;
    g.finish()
}

/// Does `count` byte `out`s to `port` in a tight loop, then exits 0: the exit round-trip
/// benchmark's guest.
pub fn out_loop(port: u16, count: u64) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("out_loop")?;
    let r = (|| {
        let a = g.a();
        a.mov(dx, u32::from(port))?;
        a.mov(rcx, count.max(1))?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.out(dx, al)?;
        a.dec(rcx)?;
        a.jnz(top)
    })();
    g.check(r)?;
    g.exit(0)?;
    g.finish()
}

/// Executes `cpuid` with EAX = `leaf`, ECX = 0 and reports EAX, EBX, ECX and EDX, in that
/// order, on the report port; then exits 0. Shows what CPUID the VMM gave the vCPU.
pub fn cpuid_report(leaf: u32) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("cpuid_report")?;
    let r = (|| {
        let a = g.a();
        a.mov(eax, leaf)?;
        a.xor(ecx, ecx)?;
        a.cpuid()?;
        a.mov(r8d, ebx)?;
        a.mov(r9d, ecx)?;
        a.mov(r10d, edx)
    })();
    g.check(r)?;
    g.report_eax()?;
    for reg in [r8d, r9d, r10d] {
        let r = g.a().mov(eax, reg);
        g.check(r)?;
        g.report_eax()?;
    }
    g.exit(0)?;
    g.finish()
}

/// Writes one byte into every 4 KiB page of `[start, start + len)`, then exits 0: makes the
/// host back exactly that much guest RAM.
pub fn touch_pages(start: u64, len: u64) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("touch_pages")?;
    let r = (|| {
        let a = g.a();
        a.mov(rbx, start)?;
        a.mov(rcx, (len / 4096).max(1))?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.mov(byte_ptr(rbx), 1)?;
        a.add(rbx, 4096)?;
        a.dec(rcx)?;
        a.jnz(top)
    })();
    g.check(r)?;
    g.exit(0)?;
    g.finish()
}

/// Its first instructions write to `port` (a timestamping device sees the guest start), then
/// it exits 0.
pub fn first_out(port: u16) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("first_out")?;
    let r = (|| {
        let a = g.a();
        a.mov(dx, u32::from(port))?;
        a.out(dx, al)
    })();
    g.check(r)?;
    g.exit(0)?;
    g.finish()
}

/// Moves the PIIX4 PM block (00:01.3) to `base` through the PCI configuration ports (`PMBA`
/// at config 0x40 = `base | 1`, `PMIOSE` at config 0x80), then reports on the report port:
/// `PMBA` read back, `PM_TMR` at `base + 8`, `PM_TMR` again after a busy loop of 2^25
/// iterations, and the dword at `old_timer` (the timer's port before the move). Exits 0.
pub fn pm_timer_probe(base: u16, old_timer: u16) -> Result<TestGuest, TestGuestError> {
    let config = |reg: u32| 0x8000_0000u32 | 1 << 11 | 3 << 8 | reg;
    let mut g = GuestAsm::new("pm_timer_probe")?;
    let r = (|| {
        let a = g.a();
        a.mov(dx, 0xcf8u32)?;
        a.mov(eax, config(0x40))?;
        a.out(dx, eax)?;
        a.mov(dx, 0xcfcu32)?;
        a.mov(eax, u32::from(base) | 1)?;
        a.out(dx, eax)?;
        a.mov(dx, 0xcf8u32)?;
        a.mov(eax, config(0x80))?;
        a.out(dx, eax)?;
        a.mov(dx, 0xcfcu32)?;
        a.mov(al, 1u32)?;
        a.out(dx, al)?;
        a.mov(dx, 0xcf8u32)?;
        a.mov(eax, config(0x40))?;
        a.out(dx, eax)?;
        a.mov(dx, 0xcfcu32)?;
        a.in_(eax, dx)
    })();
    g.check(r)?;
    g.report_eax()?;
    let timer = u32::from(base) + 8;
    let r = (|| {
        let a = g.a();
        a.mov(dx, timer)?;
        a.in_(eax, dx)
    })();
    g.check(r)?;
    g.report_eax()?;
    let r = (|| {
        let a = g.a();
        a.mov(rcx, 1u64 << 25)?;
        let mut spin = a.create_label();
        a.set_label(&mut spin)?;
        a.dec(rcx)?;
        a.jnz(spin)?;
        a.mov(dx, timer)?;
        a.in_(eax, dx)
    })();
    g.check(r)?;
    g.report_eax()?;
    let r = (|| {
        let a = g.a();
        a.mov(dx, u32::from(old_timer))?;
        a.in_(eax, dx)
    })();
    g.check(r)?;
    g.report_eax()?;
    g.exit(0)?;
    g.finish()
}

/// Checks for the `RSD PTR ` signature at `rsdp` (exits 2 without it), then writes
/// `SLP_TYP(5) << 2 | SLP_EN` to the ACPI sleep-control port 0x600; exits 1 if the VM
/// is still running afterwards.
pub fn acpi_poweroff(rsdp: u64) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("acpi_poweroff")?;
    power_off_via_acpi(&mut g, rsdp)?;
    g.finish()
}

/// The body of [`acpi_poweroff`]: check the RSDP signature at `rsdp` (exit 2 without it),
/// write S5 to the sleep-control port, exit 1 if still running.
fn power_off_via_acpi(g: &mut GuestAsm, rsdp: u64) -> Result<(), TestGuestError> {
    let mut missing = g.a().create_label();
    let r = (|| {
        let a = g.a();
        a.mov(rbx, rsdp)?;
        a.mov(rax, u64::from_le_bytes(*b"RSD PTR "))?;
        a.cmp(qword_ptr(rbx), rax)?;
        a.jne(missing)?;
        a.mov(dx, 0x600u32)?;
        a.mov(al, 0x34u32)?;
        a.out(dx, al)
    })();
    g.check(r)?;
    g.exit(1)?;
    let r = g.a().set_label(&mut missing);
    g.check(r)?;
    g.exit(2)
}

/// Offsets in [`GUEST_DATA_ADDR`] where [`power_button_poll`] counts its polls (u64) and
/// stores the event register value that ended the wait (u32).
pub const POWER_BUTTON_POLLS: u64 = GUEST_DATA_ADDR;
/// See [`POWER_BUTTON_POLLS`].
pub const POWER_BUTTON_EVENTS: u64 = GUEST_DATA_ADDR + 8;

/// Polls the ACPI GED event register at `ged_addr` (counting polls at
/// [`POWER_BUTTON_POLLS`]) until the power-button bit (bit 0) is set, stores what it read at
/// [`POWER_BUTTON_EVENTS`], then powers off through ACPI S5 as an OS would (exit codes as
/// [`acpi_poweroff`]). The interrupt-free way a guest answers [`crate::Vm::press_power_button`].
pub fn power_button_poll(ged_addr: u64, rsdp: u64) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("power_button_poll")?;
    let r = (|| {
        let a = g.a();
        a.mov(rbx, ged_addr)?;
        a.mov(rdi, POWER_BUTTON_POLLS)?;
        let mut poll = a.create_label();
        a.set_label(&mut poll)?;
        a.inc(qword_ptr(rdi))?;
        a.mov(eax, dword_ptr(rbx))?;
        a.test(eax, 1)?;
        a.jz(poll)?;
        a.mov(dword_ptr(rdi + 8), eax)
    })();
    g.check(r)?;
    power_off_via_acpi(&mut g, rsdp)?;
    g.finish()
}

/// The banner [`demo`] prints.
pub const DEMO_BANNER: &str = "kubevirt-rs demo guest: booted on kubevirt-vmm, powering off\n";

/// The demo guest `kubevirt-launcher` boots from `examples/vmi-demo.yaml`: prints
/// [`DEMO_BANNER`] on COM1 and powers off through ACPI S5 (as a real guest would, no test
/// devices needed), using the RSDP at `rsdp` to check ACPI is there (exit code 2 on the
/// debug-exit port, if present, when it is not).
pub fn demo(rsdp: u64) -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("demo")?;
    g.print(DEMO_BANNER.as_bytes())?;
    power_off_via_acpi(&mut g, rsdp)?;
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testguest::{GUEST_LOAD_ADDR, GUEST_MAX_CODE_SIZE};

    #[test]
    fn every_program_assembles_at_the_load_address() {
        let guests = [
            hello().unwrap(),
            mmio_round_trip(0xd000_0000, 1, 0xd000_0008).unwrap(),
            rendezvous().unwrap(),
            counter().unwrap(),
            i8042_reset().unwrap(),
            invalid_opcode().unwrap(),
            page_fault(1 << 33).unwrap(),
            out_loop(0x80, 10).unwrap(),
            first_out(0x80).unwrap(),
            touch_pages(0x40_0000, 0x10_0000).unwrap(),
            cpuid_report(1).unwrap(),
            acpi_poweroff(0xe_0000).unwrap(),
            power_button_poll(crate::acpi::ged::GED_MMIO_ADDR, 0xe_0000).unwrap(),
        ];
        for g in guests {
            assert_eq!(g.entry, GUEST_LOAD_ADDR, "{}", g.name);
            assert!(
                !g.code.is_empty() && g.code.len() <= GUEST_MAX_CODE_SIZE,
                "{}",
                g.name
            );
        }
    }

    #[test]
    fn hello_carries_its_text() {
        let g = hello().unwrap();
        assert!(
            g.code
                .windows(HELLO_TEXT.len())
                .any(|w| w == HELLO_TEXT.as_bytes())
        );
    }
}
