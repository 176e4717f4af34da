//! Test guests: tiny x86-64 programs that run at CPL 3 and talk over port I/O and MMIO.
//!
//! On hosts where guest CPL 0 is emulated (KVM on PVM) a real kernel is too slow to boot, so
//! tests run purpose-built guests instead: the VMM enters them directly in 64-bit mode at CPL 3
//! with IOPL 3 and user-accessible identity mappings ([`crate::DirectBoot`] with
//! [`crate::Privilege::User`]), and they report through COM1 ([`SERIAL_PORT`]), a report port
//! ([`REPORT_PORT`]) and the debug-exit port ([`DEBUG_EXIT_PORT`]). Programs are assembled
//! at run time with iced-x86 ([`GuestAsm`]), so no cross toolchain is needed;
//! [`elf::pvh_elf`] wraps one into a PVH ELF that other VMMs (QEMU: `-kernel guest.elf`) boot.
//! [`virtio_blk`] is a polling virtio-pci block driver built the same way, [`virtio_net`] a
//! polling virtio-net driver. [`hostile`] hammers every device with random accesses;
//! [`script`] runs a list of accesses the host wrote, to play a driver step by step.

pub mod asm;
pub mod blk_stream_run;
pub mod boot_sector;
pub mod elf;
pub mod hostile;
pub mod hostile_standalone;
pub mod netns;
pub mod programs;
pub mod script;
pub mod virtio_blk;
pub mod virtio_blk_stream;
pub mod virtio_net;
pub mod virtio_pci;

pub use asm::GuestAsm;

use crate::arch::regs::Privilege;
use crate::boot::{BootSource, DirectBoot};

/// COM1, where guests print.
pub const SERIAL_PORT: u16 = crate::devices::serial::COM1_PORT;
/// The debug-exit port: the byte written becomes [`crate::ExitReason::DebugExit`].
pub const DEBUG_EXIT_PORT: u16 = crate::devices::debug_exit::DEBUG_EXIT_PORT;
/// A port where programs report 32-bit values (`out dx, eax`) to a test device.
pub const REPORT_PORT: u16 = 0x500;
/// Where programs are loaded and entered (1 MiB).
pub const GUEST_LOAD_ADDR: u64 = 0x10_0000;
/// Largest program: the PVH stub follows at [`GUEST_LOAD_ADDR`] + this.
pub const GUEST_MAX_CODE_SIZE: usize = 0x1_0000;
/// Scratch data shared by host and guest (flags, counters), 4 KiB.
pub const GUEST_DATA_ADDR: u64 = 0x18_0000;
/// vCPU 0's stack top; vCPU *i* gets 16 KiB below the previous.
pub const GUEST_STACK_TOP: u64 = 0x20_0000;
/// Guest RAM every test guest fits in.
pub const GUEST_MEMORY_SIZE: u64 = 4 << 20;

/// Errors assembling a test guest.
#[derive(Debug, thiserror::Error)]
pub enum TestGuestError {
    /// iced-x86 refused an instruction (a bug in the program).
    #[error("assembling test guest {name}: {source}")]
    Assemble {
        /// The program.
        name: &'static str,
        /// The assembler's error.
        #[source]
        source: iced_x86::IcedError,
    },
    /// The program is larger than [`GUEST_MAX_CODE_SIZE`].
    #[error(
        "test guest {name} is {size} bytes, more than the {GUEST_MAX_CODE_SIZE} a guest may have"
    )]
    TooLarge {
        /// The program.
        name: &'static str,
        /// Its size.
        size: usize,
    },
}

/// An assembled test guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestGuest {
    /// Program name, for messages.
    pub name: &'static str,
    /// Machine code, loaded at [`GUEST_LOAD_ADDR`].
    pub code: Vec<u8>,
    /// Entry point.
    pub entry: u64,
    /// The privilege the program starts at. [`Privilege::User`] (every program [`GuestAsm`]
    /// assembles): CPL 3 with IOPL 3 and user-accessible identity mappings. [`Privilege::Kernel`]:
    /// CPL 0 in 64-bit mode with the same GDT selectors (the [`crate::arch::gdt`] layout) and a
    /// TSS, for a program that installs its own IDT and then drops to CPL 3 itself (its page
    /// tables may then be supervisor-only under direct boot: the program opens them).
    pub privilege: Privilege,
}

impl TestGuest {
    /// Boots this guest directly in 64-bit mode at its [`TestGuest::privilege`].
    pub fn boot_source(&self) -> BootSource {
        BootSource::Direct(DirectBoot {
            image: self.code.clone(),
            load_addr: GUEST_LOAD_ADDR,
            entry: self.entry,
            stack_top: GUEST_STACK_TOP,
            privilege: self.privilege,
        })
    }

    /// A VM config for this guest: `vcpus` vCPUs, [`GUEST_MEMORY_SIZE`] of RAM, the
    /// debug-exit port, COM1 to `console`.
    pub fn vm_config(&self, vcpus: u8, console: crate::ConsoleConfig) -> crate::VmConfig {
        crate::VmConfig::new(vcpus, GUEST_MEMORY_SIZE, self.boot_source())
            .with_serial(console)
            .with_debug_exit()
    }
}
