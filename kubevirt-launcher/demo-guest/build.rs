//! Builds the demo guest (`guest/`, a `no_std` cargo package of its own with its own lock file)
//! with the cargo and rustc that build this crate, for the host target, into a flat image linked
//! at 4 MiB (`link.ld`, `IMAGE_BASE` in the library). No cross toolchain: the host target's `core` serves, with start
//! files and libc left out. The guest's crates (the SSH server and its RustCrypto dependencies)
//! come from crates.io, pinned by `guest/Cargo.lock` (`--locked`); its target directory lives in
//! `OUT_DIR`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let guest = dir.join("guest");
    println!("cargo:rerun-if-changed={}", guest.display());
    println!("cargo:rerun-if-changed={}", dir.join("link.ld").display());
    let target_dir = out.join("guest-target");
    // Flags for every crate of the guest (not for build scripts and proc macros, which run on
    // the host: hence the explicit --target): static code for the identity map, baseline
    // x86-64, the guest's own randomness (`getrandom`'s custom backend), curve25519's portable
    // backend (no AVX2 detection: the guest never enables XSAVE).
    let rustflags = [
        "-Crelocation-model=static",
        "-Ctarget-cpu=x86-64",
        "--cfg=getrandom_backend=\"custom\"",
        "--cfg=curve25519_dalek_backend=\"serial\"",
    ]
    .join("\x1f");
    let link = dir.join("link.ld");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest)
        .args(["rustc", "--release", "--locked", "--bin", "demo_guest"])
        .args(["--target", &target])
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--")
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static", "-C", "link-arg=-no-pie"])
        .args(["-C", "link-arg=-Wl,--build-id=none"])
        .arg("-C")
        .arg(format!("link-arg=-Wl,-T,{}", link.display()));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let outer = key.starts_with("CARGO_BUILD_")
            || key.starts_with("CARGO_PROFILE_")
            || key.starts_with("CARGO_TARGET_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*key,
                "RUSTFLAGS" | "RUSTC_WRAPPER" | "RUSTC_WORKSPACE_WRAPPER" | "CARGO_INCREMENTAL"
            );
        if outer {
            cmd.env_remove(&*key);
        }
    }
    // Parallelism: the outer cargo's jobserver (CARGO_MAKEFLAGS) is inherited.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    let status = cmd.status().expect("running cargo for the demo guest");
    assert!(
        status.success(),
        "building the demo guest failed (see cargo's messages above)"
    );
    let built = target_dir.join(&target).join("release").join("demo_guest");
    std::fs::copy(&built, out.join("demo-guest.bin")).expect("copying the demo guest's image");
}
