//! What the workspace's integration tests and benchmarks share, in one place: temporary
//! directories that clean up after a passing test ([`tempdir`]), waiting for a condition
//! ([`eventually`], [`eventually_async`]), the upstream fixtures ([`fixture`], honouring
//! `KUBEVIRT_FIXTURES`), the real kubectl ([`kubectl`]), building the launcher binary
//! ([`launcher_binary`]), finding a file under a run directory ([`find_file`]) and the demo
//! guest's OCI image (`demo_image`, feature `demo-image`, on by default) and its VMI and VM
//! ([`demo_vmi`], [`DemoVm`]), container images built
//! from a file tree ([`oci`]), a private registry to push them to ([`registry`]) and a TCP
//! port for a test's server ([`free_port`]).
//!
//! A development crate (`publish = false`): products never depend on it, only `[dev-dependencies]`.
#![deny(missing_docs)]

mod binaries;
mod demo;
mod dir;
mod fixtures;
mod kubectl;
pub mod oci;
mod port;
mod process;
pub mod registry;
mod wait;

pub use binaries::{PREBUILT, Profile, controller_binary, launcher_binary, virtctl_binary};
pub use demo::{DemoVm, demo_vmi};
pub use dir::{TestDir, find_file, tempdir};
pub use fixtures::{fixture, fixtures_dir};
pub use kubectl::kubectl;
pub use port::free_port;
pub use process::{launchers_in, process_alive};
pub use wait::{TIMEOUT, eventually, eventually_async, eventually_within};

#[cfg(feature = "demo-image")]
/// Writes the demo guest's image as an OCI layout at `<dir>/image` and returns its reference
/// (`oci:<dir>/image:demo`, kernel at `/boot/demo.elf`).
///
/// # Panics
/// When the image cannot be written (a test failure).
pub fn demo_image(dir: &std::path::Path) -> String {
    let image = dir.join("image");
    kubevirt_demo_guest::write_image(&image)
        .unwrap_or_else(|e| panic!("writing the demo guest image: {e}"))
}

#[cfg(feature = "demo-image")]
/// [`demo_image`] with a `ballast` of `size` bytes of incompressible, never-zero data at
/// `/boot/ballast.img`: as the VMI's `kernelBoot.container.initrdPath` it fills that much guest
/// RAM, which a live migration must copy page by page (a bandwidth limit then holds the
/// migration in flight for `size` / limit seconds, whatever the machine's speed).
///
/// # Panics
/// When the image cannot be written (a test failure).
pub fn demo_image_with_ballast(dir: &std::path::Path, size: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let ballast: Vec<u8> = (0..size)
        .map(|_| {
            // xorshift64: no page of it is zero.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x as u8) | 1
        })
        .collect();
    let image = dir.join("image");
    kubevirt_demo_guest::write_image_with(&image, &[("boot/ballast.img", &ballast)])
        .unwrap_or_else(|e| panic!("writing the demo guest image: {e}"))
}
