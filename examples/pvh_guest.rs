//! Write a test guest as a PVH ELF, so other VMMs (QEMU) can boot the same guest that
//! kubevirt-vmm boots: `cargo run --example pvh_guest -- hello /tmp/hello.elf`, then
//! `qemu-system-x86_64 -machine q35,accel=kvm -nographic -serial stdio -kernel /tmp/hello.elf \
//!  -device isa-debug-exit,iobase=0xf4,iosize=1` (the guest exits through the debug-exit port).

use kubevirt_vmm::acpi::RSDP_ADDR;
use kubevirt_vmm::testguest::{elf, programs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "hello".into());
    let out = args.next().unwrap_or_else(|| format!("{which}.elf"));
    let guest = match which.as_str() {
        "hello" => programs::hello()?,
        "demo" => programs::demo(RSDP_ADDR)?,
        other => return Err(format!("unknown guest {other:?}: hello or demo").into()),
    };
    std::fs::write(&out, elf::pvh_elf(&guest)?)?;
    println!("{out}");
    Ok(())
}
