//! Boot the hello test guest on kubevirt-vmm: it prints `Hello from the guest` on its serial
//! console (forwarded to this process's stdout) and powers off through the debug-exit port.
//! Prints how long it took from `Vm` creation to the guest's first serial byte.
//!
//! Run: `cargo run --release --example vmm_hello`
//!
//! This is also the smallest picture of embedding the library: build a [`VmConfig`] (vCPUs,
//! RAM, boot source, console), create the [`Vm`], start it, and wait for its [`ExitReason`].

use std::os::fd::AsFd;
use std::process::ExitCode;

use kubevirt_vmm::testguest::programs;
use kubevirt_vmm::{ConsoleConfig, ExitReason, Vm};

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    // The guest: a few dozen bytes of x86-64 assembled at run time, entered at CPL 3.
    let guest = programs::hello()?;
    // Its serial console goes to our stdout (a duplicate of fd 1, which the VM owns).
    let stdout = std::io::stdout().as_fd().try_clone_to_owned()?;
    let config = guest.vm_config(1, ConsoleConfig::Fd(stdout));

    let vm = Vm::new(config)?;
    vm.start()?;
    let reason = vm.wait();

    match vm.console_stats().and_then(|s| s.first_byte_at()) {
        Some(first) => println!(
            "first serial byte {:.3} ms after Vm creation",
            (first - vm.created_at()).as_secs_f64() * 1e3
        ),
        None => println!("the guest printed nothing"),
    }
    println!("guest exit: {reason}");
    Ok(if reason == (ExitReason::DebugExit { code: 0 }) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
