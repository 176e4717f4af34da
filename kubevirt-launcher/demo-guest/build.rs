//! Compiles the demo guest (`guest/main.rs`, `no_std`, no dependencies) with the same rustc
//! that builds this crate, into a flat image linked at 1 MiB (`link.ld`). No cross toolchain:
//! the host target's `core` serves, with start files and libc left out.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let guest = dir.join("guest");
    println!("cargo:rerun-if-changed={}", guest.display());
    println!("cargo:rerun-if-changed={}", dir.join("link.ld").display());
    let image = out.join("demo-guest.bin");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "bin",
            "--crate-name",
            "demo_guest",
        ])
        .args(["-D", "warnings"])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "relocation-model=static",
        ])
        .args([
            "-C",
            "debuginfo=0",
            "-C",
            "codegen-units=1",
            "-C",
            "target-cpu=x86-64",
        ])
        .args([
            "-C",
            "link-arg=-nostartfiles",
            "-C",
            "link-arg=-nostdlib",
            "-C",
            "link-arg=-static",
        ])
        .args([
            "-C",
            "link-arg=-no-pie",
            "-C",
            "link-arg=-Wl,--build-id=none",
        ])
        .arg("-C")
        .arg(format!("link-arg=-Wl,-T,{}", dir.join("link.ld").display()))
        .arg("-o")
        .arg(&image)
        .arg(guest.join("main.rs"))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running rustc for the demo guest");
    assert!(
        status.success(),
        "compiling the demo guest failed (see rustc's messages above)"
    );
}
