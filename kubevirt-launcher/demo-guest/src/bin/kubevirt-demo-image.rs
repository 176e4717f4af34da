//! `kubevirt-demo-image [DIR] [--elf FILE]`: writes the demo guest's container image as an OCI
//! image layout at DIR (default `target/demo-image`; `examples/vmi-demo.yaml` boots
//! `oci:target/demo-image:demo`) and, with `--elf`, its bare PVH ELF for embedders of
//! kubevirt-vmm (`cargo run --example vmm_hello -- FILE`) and for QEMU's `-kernel`.
//!
//! Run from the workspace: `cargo run -p kubevirt-demo-guest -- target/demo-image --elf
//! target/demo-guest.elf`. A development tool: the launcher does not link the demo guest.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: kubevirt-demo-image [DIR] [--elf FILE]";

fn main() -> ExitCode {
    let mut dir = PathBuf::from("target/demo-image");
    let mut elf = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some("--elf") => match args.next() {
                Some(file) => elf = Some(PathBuf::from(file)),
                None => {
                    eprintln!("error: --elf needs a FILE\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            Some(flag) if flag.starts_with('-') => {
                eprintln!("error: unknown option {flag}\n{USAGE}");
                return ExitCode::from(2);
            }
            _ => dir = PathBuf::from(arg),
        }
    }
    match kubevirt_demo_guest::write_image(&dir) {
        Ok(reference) => println!("wrote the demo guest image to {reference}"),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(file) = elf {
        match kubevirt_demo_guest::write_elf(&file) {
            Ok(()) => println!("wrote the demo guest's PVH ELF to {}", file.display()),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
