//! The smallest picture of embedding kubevirt-vmm: build a [`VmConfig`] (vCPUs, RAM, boot
//! source, console), create the [`Vm`], start it, and wait for its [`ExitReason`]. Uses only
//! the crate's default features: copy it into your own crate as it is.
//!
//! `cargo run --release --example vmm_hello` boots a 31-byte payload written out below by hand:
//! it prints `Hello from the guest` on COM1 (forwarded to this process's stdout) and exits
//! through the debug-exit port. Prints how long it took from `Vm` creation to the guest's first
//! serial byte.
//!
//! `cargo run --release --example vmm_hello -- KERNEL` boots a Linux bzImage or PVH ELF instead,
//! with the serial console on stdout and ACPI, until the guest powers off (Ctrl-C ends it). The
//! workspace's demo guest is one:
//! `cargo run -p kubevirt-demo-guest -- target/demo-image --elf target/demo-guest.elf`, then
//! `cargo run --example vmm_hello -- target/demo-guest.elf` and type `poweroff` at its prompt
//! (the console input is not wired up here: the example presses the ACPI power button after 2 s).

use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::Duration;

use kubevirt_vmm::{
    BootSource, ConsoleConfig, DirectBoot, ExitReason, KernelImage, LinuxBoot, Privilege, Vm,
    VmConfig,
};

/// Where the payload is loaded and entered (1 MiB).
const LOAD_ADDR: u64 = 0x10_0000;
/// vCPU 0's stack top (2 MiB).
const STACK_TOP: u64 = 0x20_0000;
/// COM1.
const COM1: u16 = 0x3f8;
/// The VMM's debug-exit port: the byte written becomes [`ExitReason::DebugExit`].
const DEBUG_EXIT: u16 = 0xf4;
const TEXT: &[u8] = b"Hello from the guest\n";

/// x86-64 machine code, entered in 64-bit mode at CPL 3 with IOPL 3 (so `out` is allowed):
/// print [`TEXT`] byte by byte on COM1, then write 0 to the debug-exit port.
fn hello_payload() -> Vec<u8> {
    let len = TEXT.len() as u32;
    let [c0, c1] = COM1.to_le_bytes();
    let [e0, e1] = DEBUG_EXIT.to_le_bytes();
    let mut code = vec![0x48, 0x8d, 0x35, 24, 0, 0, 0]; //  0: lea rsi, [rip + 24] (the text at 31)
    code.push(0xb9); //                                      7: mov ecx, len
    code.extend_from_slice(&len.to_le_bytes());
    code.extend_from_slice(&[0x66, 0xba, c0, c1]); //     12: mov dx, COM1
    code.push(0xac); //                                     16: lodsb
    code.push(0xee); //                                     17: out dx, al
    code.extend_from_slice(&[0xff, 0xc9]); //              18: dec ecx
    code.extend_from_slice(&[0x75, 0xfa]); //              20: jnz 16
    code.extend_from_slice(&[0x30, 0xc0]); //              22: xor al, al
    code.extend_from_slice(&[0x66, 0xba, e0, e1]); //     24: mov dx, DEBUG_EXIT
    code.push(0xee); //                                     28: out dx, al
    code.extend_from_slice(&[0xeb, 0xfe]); //              29: jmp 29
    debug_assert_eq!(code.len(), 31);
    code.extend_from_slice(TEXT); //                        31: the text
    code
}

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    // The serial console goes to our stdout (a duplicate of fd 1, which the VM owns).
    let stdout = ConsoleConfig::Fd(std::io::stdout().as_fd().try_clone_to_owned()?);
    let kernel = std::env::args_os().nth(1);
    let config = match &kernel {
        None => VmConfig::new(
            1,
            4 << 20,
            BootSource::Direct(DirectBoot {
                image: hello_payload(),
                load_addr: LOAD_ADDR,
                entry: LOAD_ADDR,
                stack_top: STACK_TOP,
                privilege: Privilege::User,
            }),
        )
        .with_debug_exit(),
        Some(path) => VmConfig::new(
            1,
            64 << 20,
            BootSource::Linux(LinuxBoot {
                kernel: KernelImage::Path(path.into()),
                initrd: None,
                cmdline: "console=ttyS0 reboot=k panic=1".into(),
            }),
        ),
    }
    .with_serial(stdout);

    let vm = Vm::new(config)?;
    vm.start()?;
    let reason = match kernel {
        None => vm.wait(),
        Some(_) => match vm.wait_timeout(Duration::from_secs(2)) {
            Some(reason) => reason,
            None => {
                println!("\n[vmm_hello: pressing the ACPI power button]");
                vm.press_power_button()?;
                vm.wait()
            }
        },
    };

    match vm.console_stats().and_then(|s| s.first_byte_at()) {
        Some(first) => println!(
            "first serial byte {:.3} ms after Vm creation",
            (first - vm.created_at()).as_secs_f64() * 1e3
        ),
        None => println!("the guest printed nothing"),
    }
    println!("guest exit: {reason}");
    Ok(
        if matches!(
            reason,
            ExitReason::DebugExit { code: 0 } | ExitReason::PowerOff
        ) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}
