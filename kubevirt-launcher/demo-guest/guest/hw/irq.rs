//! Interrupts, so the guest can wait like a kernel instead of spinning: an IDT with short CPL 0
//! handlers, the local APIC (and its timer), the IOAPIC for the serial port and the ACPI power
//! button, and a CPL 3 → CPL 0 gate that halts until the next interrupt.
//!
//! The program is entered at CPL 0 (the PVH stub or direct boot with kernel privilege);
//! `_start` loads the IDT, points the TSS's RSP0 at a kernel stack, makes the loader's page
//! tables user-accessible if they are not, and `iretq`s to CPL 3 with RFLAGS.IF = 0. All real
//! work then runs at CPL 3 with interrupts held pending in the LAPIC's IRR; only [`wait`] opens
//! them, inside the gate (`int 0x80`: `sti; hlt; cli; iretq`), so a handler can never interrupt
//! CPL 3 code and no wake-up is lost between the last look at the devices and the halt. A
//! handler only records its source in [`PENDING`] and writes the EOI: guest CPL 0 is emulated
//! on some hosts (KVM on PVM, ~2000x slower than CPL 3), so the CPL 0 path is a dozen
//! instructions per wake-up.
//!
//! KVM on PVM (measured): `int n` at CPL 3 raises #UD instead of going through its gate, so the
//! #UD handler recognises `int 0x80` and runs the gate's body; `syscall` reaches LSTAR still at
//! CPL 3, and CPL 3 cannot `sti` (RFLAGS.IOPL reads 0 there whatever `iretq` set). Hence
//! interrupts are only ever taken at CPL 0, inside [`wait`].
//!
//! Entered at CPL 3 (an older loader), the program cannot install an IDT: [`enabled`] is false
//! and the main loop polls as before.

use super::mmio::{r32, w32};
use super::{TICKS_PER_SECOND, outb, rdtsc};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The LAPIC timer fired.
pub const TIMER: u32 = 1 << 0;
/// COM1 received data.
pub const SERIAL: u32 = 1 << 1;
/// virtio-net used a receive buffer.
pub const NET: u32 = 1 << 2;
/// The ACPI Generic Event Device (power button) raised its line.
pub const POWER: u32 = 1 << 3;
/// Every source: what a polling loop (or the first round) looks at.
pub const ALL: u32 = TIMER | SERIAL | NET | POWER;

const VECTOR_TIMER: u8 = 0x20;
const VECTOR_SERIAL: u8 = 0x21;
/// The vector virtio-net's receive queue raises (MSI-X).
pub const VECTOR_NET: u8 = 0x22;
const VECTOR_POWER: u8 = 0x23;
const VECTOR_INVALID_OPCODE: u8 = 6;
const VECTOR_WAIT: u8 = 0x80;
const VECTOR_SPURIOUS: u8 = 0xff;

/// The selector of the 64-bit kernel code segment in the loader's GDT (kubevirt-vmm's boot GDT
/// and its PVH stub share one layout).
const KERNEL_CODE: u64 = 0x10;

const LAPIC: u64 = 0xfee0_0000;
const LAPIC_ID: u64 = LAPIC + 0x20;
const LAPIC_TPR: u64 = LAPIC + 0x80;
const LAPIC_SVR: u64 = LAPIC + 0xf0;
const LAPIC_LVT_TIMER: u64 = LAPIC + 0x320;
const LAPIC_LVT_LINT0: u64 = LAPIC + 0x350;
const LAPIC_TIMER_INITIAL: u64 = LAPIC + 0x380;
const LAPIC_TIMER_CURRENT: u64 = LAPIC + 0x390;
const LAPIC_TIMER_DIVIDE: u64 = LAPIC + 0x3e0;
const LVT_MASKED: u32 = 1 << 16;
const SVR_ENABLE: u32 = 1 << 8;
const DIVIDE_BY_16: u32 = 0x3;

const IOAPIC_INDEX: u64 = 0xfec0_0000;
const IOAPIC_DATA: u64 = IOAPIC_INDEX + 0x10;
/// The ISA IRQ of COM1 and the GSI of kubevirt-vmm's GED (both IOAPIC pins, edge, active high).
const COM1_IRQ: u8 = 4;
const GED_IRQ: u8 = 5;

const PIC_MASTER_DATA: u16 = 0x21;
const PIC_SLAVE_DATA: u16 = 0xa1;

/// Sources whose interrupt arrived since the last [`take`], set by the CPL 0 handlers.
static PENDING: AtomicU32 = AtomicU32::new(0);
static ENABLED: AtomicBool = AtomicBool::new(false);
/// LAPIC timer ticks per `TSC_SPAN` TSC ticks, measured at start.
static LAPIC_PER_SPAN: AtomicU32 = AtomicU32::new(0);
const TSC_SPAN: u64 = TICKS_PER_SECOND / 200;
/// The deadline the timer is armed for (0: none).
static mut ARMED: u64 = 0;

/// An IDT register image with limit 0: loaded to end the VM on an unexpected fault.
static NO_IDT: [u8; 10] = [0; 10];

const KERNEL_STACK: usize = 8192;
#[repr(C, align(16))]
struct Aligned<const N: usize>([u8; N]);
/// The IDT (256 gates of 16 bytes); `_start` loads it, [`init`] fills it.
#[unsafe(no_mangle)]
static mut IDT: Aligned<4096> = Aligned([0; 4096]);
/// The stack interrupts from CPL 3 switch to (the TSS's RSP0).
#[unsafe(no_mangle)]
static mut KERNEL_STACK_AREA: Aligned<KERNEL_STACK> = Aligned([0; KERNEL_STACK]);

core::arch::global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    // RSI: the PVH start info (0 under direct boot): main's first argument.
    "mov rdi, rsi",
    "mov eax, cs",
    "test al, 3",
    "jnz 3f",
    // CPL 0: IDT, RSP0, user-accessible page tables, then down to CPL 3 with IF = 0, IOPL 3.
    "call kernel_init",
    "mov rax, rsp",
    "push 0x23",
    "push rax",
    "push 0x3002",
    "push 0x2b",
    "lea rax, [rip + 4f]",
    "push rax",
    "iretq",
    "4:",
    "mov esi, 1",
    "jmp 5f",
    "3:",
    "xor esi, esi",
    "5:",
    "and rsp, -16",
    "call {main}",
    "6: pause",
    "jmp 6b",
    "",
    ".text",
    // Preserves RDI.
    "kernel_init:",
    "sub rsp, 16",
    "lea rax, [rip + {idt}]",
    "mov word ptr [rsp], 4095",
    "mov qword ptr [rsp + 2], rax",
    "lidt [rsp]",
    // The TSS the loader's TR names: its base from the GDT descriptor, RSP0 at offset 4.
    "sgdt [rsp]",
    "mov rcx, qword ptr [rsp + 2]",
    "xor eax, eax",
    "str ax",
    "and eax, 0xfff8",
    "add rcx, rax",
    "mov eax, dword ptr [rcx + 2]",
    "and eax, 0xffffff",
    "movzx edx, byte ptr [rcx + 7]",
    "shl edx, 24",
    "or eax, edx",
    "mov edx, dword ptr [rcx + 8]",
    "shl rdx, 32",
    "or rax, rdx",
    "lea rdx, [rip + {stack} + {stack_size}]",
    "mov qword ptr [rax + 4], rdx",
    "add rsp, 16",
    // Page tables mapped for the kernel only (direct boot at CPL 0): open them to CPL 3.
    "mov rax, cr3",
    "and rax, -4096",
    "test byte ptr [rax], 4",
    "jnz 2f",
    "push rdi",
    "mov rdi, rax",
    "mov esi, 4",
    "call open_table",
    "pop rdi",
    "mov rax, cr3",
    "mov cr3, rax",
    "2:",
    "ret",
    "",
    // Sets the user bit in every present entry of the table at RDI (level ESI: 4 = PML4) and
    // of the tables below it.
    "open_table:",
    "push rbx",
    "push r12",
    "push r13",
    "mov rbx, rdi",
    "mov r12d, esi",
    "xor r13d, r13d",
    "1:",
    "mov rax, qword ptr [rbx + 8 * r13]",
    "test al, 1",
    "jz 2f",
    "or rax, 4",
    "mov qword ptr [rbx + 8 * r13], rax",
    "cmp r12d, 1",
    "je 2f",
    "test al, 0x80",
    "jnz 2f",
    "movabs rdi, 0x000ffffffffff000",
    "and rdi, rax",
    "lea esi, [r12 - 1]",
    "call open_table",
    "2:",
    "inc r13d",
    "cmp r13d, 512",
    "jne 1b",
    "pop r13",
    "pop r12",
    "pop rbx",
    "ret",
    "",
    // The gate CPL 3 halts through: interrupts open only between `sti` and `cli`.
    ".global irq_wait",
    "irq_wait:",
    "sti",
    "hlt",
    "cli",
    "iretq",
    // #UD: KVM on PVM raises it for `int 0x80` at CPL 3. That instruction (CD 80 at the
    // return RIP) is taken as the wait gate and stepped over; any other #UD is fatal: an empty
    // IDT turns the next fault into a triple fault, which ends the VM where its VMM sees it.
    ".global irq_invalid_opcode",
    "irq_invalid_opcode:",
    "push rax",
    "mov rax, qword ptr [rsp + 8]",
    "cmp word ptr [rax], 0x80cd",
    "jne 8f",
    "add qword ptr [rsp + 8], 2",
    "pop rax",
    "jmp irq_wait",
    "8:",
    "lidt [rip + {no_idt}]",
    "ud2",
    ".global irq_timer",
    "irq_timer:",
    "push rax",
    "mov eax, {timer}",
    "jmp 7f",
    ".global irq_serial",
    "irq_serial:",
    "push rax",
    "mov eax, {serial}",
    "jmp 7f",
    ".global irq_net",
    "irq_net:",
    "push rax",
    "mov eax, {net}",
    "jmp 7f",
    ".global irq_power",
    "irq_power:",
    "push rax",
    "mov eax, {power}",
    "7:",
    "or dword ptr [rip + {pending}], eax",
    "mov eax, 0xfee000b0",
    "mov dword ptr [rax], 0",
    "pop rax",
    "iretq",
    ".global irq_spurious",
    "irq_spurious:",
    "iretq",
    main = sym crate::main,
    no_idt = sym NO_IDT,
    idt = sym IDT,
    stack = sym KERNEL_STACK_AREA,
    stack_size = const KERNEL_STACK,
    pending = sym PENDING,
    timer = const TIMER,
    serial = const SERIAL,
    net = const NET,
    power = const POWER,
);

unsafe extern "C" {
    fn irq_wait();
    fn irq_invalid_opcode();
    fn irq_timer();
    fn irq_serial();
    fn irq_net();
    fn irq_power();
    fn irq_spurious();
}

/// Writes gate `vector` of the IDT: an interrupt gate to `handler`, callable from CPL `dpl`.
fn set_gate(vector: u8, handler: unsafe extern "C" fn(), dpl: u64) {
    let off = handler as usize as u64;
    let low = (off & 0xffff)
        | (KERNEL_CODE << 16)
        | ((0x8e | (dpl << 5)) << 40)
        | (((off >> 16) & 0xffff) << 48);
    let at = (&raw mut IDT) as u64 + 16 * u64::from(vector);
    super::mmio::w64(at, low);
    super::mmio::w64(at + 8, off >> 32);
}

fn ioapic_route(pin: u8, vector: u8, apic_id: u32) {
    let index = 0x10 + 2 * u32::from(pin);
    w32(IOAPIC_INDEX, index + 1);
    w32(IOAPIC_DATA, apic_id << 24);
    // Fixed delivery, physical destination, active high, edge, unmasked.
    w32(IOAPIC_INDEX, index);
    w32(IOAPIC_DATA, u32::from(vector));
}

/// This vCPU's APIC id.
pub fn apic_id() -> u32 {
    r32(LAPIC_ID) >> 24
}

/// Whether interrupts are set up (the program was entered at CPL 0 and [`init`] ran).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Fills the IDT, enables the LAPIC and its timer, masks the legacy PIC, routes COM1 and the
/// power button through the IOAPIC and turns on COM1's receive interrupt. `kernel`: whether
/// `_start` ran at CPL 0 (without it nothing is set up).
pub fn init(kernel: bool) {
    if !kernel {
        return;
    }
    set_gate(VECTOR_WAIT, irq_wait, 3);
    set_gate(VECTOR_INVALID_OPCODE, irq_invalid_opcode, 0);
    set_gate(VECTOR_TIMER, irq_timer, 0);
    set_gate(VECTOR_SERIAL, irq_serial, 0);
    set_gate(VECTOR_NET, irq_net, 0);
    set_gate(VECTOR_POWER, irq_power, 0);
    set_gate(VECTOR_SPURIOUS, irq_spurious, 0);
    // The 8259s stay out of it: masked, and LINT0 (their ExtINT wire) masked too.
    outb(PIC_MASTER_DATA, 0xff);
    outb(PIC_SLAVE_DATA, 0xff);
    w32(LAPIC_SVR, SVR_ENABLE | u32::from(VECTOR_SPURIOUS));
    w32(LAPIC_LVT_LINT0, LVT_MASKED);
    w32(LAPIC_TPR, 0);
    // The timer's rate against the TSC, so deadlines in TSC ticks arm it right.
    w32(LAPIC_TIMER_DIVIDE, DIVIDE_BY_16);
    w32(LAPIC_LVT_TIMER, LVT_MASKED | u32::from(VECTOR_TIMER));
    w32(LAPIC_TIMER_INITIAL, u32::MAX);
    let start = rdtsc();
    while rdtsc() - start < TSC_SPAN {
        core::hint::spin_loop();
    }
    let counted = u32::MAX - r32(LAPIC_TIMER_CURRENT);
    w32(LAPIC_TIMER_INITIAL, 0);
    w32(LAPIC_LVT_TIMER, u32::from(VECTOR_TIMER));
    LAPIC_PER_SPAN.store(counted.max(1), Ordering::Relaxed);
    let id = apic_id();
    ioapic_route(COM1_IRQ, VECTOR_SERIAL, id);
    ioapic_route(GED_IRQ, VECTOR_POWER, id);
    super::console::enable_receive_interrupt();
    ENABLED.store(true, Ordering::Relaxed);
}

/// The sources that interrupted since the last call.
pub fn take() -> u32 {
    PENDING.swap(0, Ordering::Relaxed)
}

/// Arms the LAPIC timer for TSC `deadline` (or stops it), touching it only on a change.
fn arm(deadline: Option<u64>) {
    let deadline = deadline.unwrap_or(0);
    // SAFETY: one vCPU, and only CPL 3 code (never a handler) touches ARMED.
    let armed = unsafe { &mut *(&raw mut ARMED) };
    if *armed == deadline {
        return;
    }
    *armed = deadline;
    let count = if deadline == 0 {
        0
    } else {
        let ticks = deadline.saturating_sub(rdtsc());
        let lapic = u128::from(ticks) * u128::from(LAPIC_PER_SPAN.load(Ordering::Relaxed))
            / u128::from(TSC_SPAN);
        lapic.clamp(1, u128::from(u32::MAX)) as u32
    };
    w32(LAPIC_TIMER_INITIAL, count);
}

/// Halts until an interrupt arrives or TSC `deadline` passes. Returns at once if one is
/// already pending (it stayed in the IRR while CPL 3 ran with IF = 0).
pub fn wait(deadline: Option<u64>) {
    if deadline.is_some_and(|d| rdtsc() >= d) {
        return;
    }
    arm(deadline);
    // SAFETY: the DPL 3 gate `irq_wait` halts and returns with every register intact.
    unsafe { core::arch::asm!("int 0x80", options(nostack)) };
    if PENDING.load(Ordering::Relaxed) & TIMER != 0 {
        // SAFETY: as in `arm`.
        unsafe { *(&raw mut ARMED) = 0 };
    }
}
