//! Build the demo VirtualMachine (examples/vm-demo.yaml) in Rust the way an embedding operator
//! would, check it with upstream's defaults and validation, and print the YAML that
//! `kubectl apply -f -` accepts. `tests/build_vm.rs` proves the output is vm-demo.yaml.
//!
//! Run: `cargo run --example build_vm | kubectl apply -f -`

use kubevirt_rs::api::codec::to_yaml;
use kubevirt_rs::api::core::v1::{Disk, KernelBoot, RunStrategy, VirtualMachine, Volume};
use kubevirt_rs::api::{defaults, validate};
use std::process::ExitCode;

/// examples/vm-demo.yaml as a Rust expression.
pub fn demo_vm() -> VirtualMachine {
    VirtualMachine::named("demo")
        .label("app", "demo")
        .run_strategy(RunStrategy::Always)
        .termination_grace_period(30)
        .cores(1)
        .memory("64Mi")
        .kernel_boot(
            KernelBoot::container("oci:target/demo-image:demo", "/boot/demo.elf")
                .args("console=ttyS0"),
        )
        .rng()
        .no_pod_interface()
        .disk(
            Disk::virtio("scratch"),
            Volume::empty_disk("scratch", "16Mi"),
        )
        .cloud_init_user_data("#cloud-config\nhostname: demo-vm\n")
}

#[allow(dead_code)] // the test includes this file for `demo_vm` only
fn main() -> ExitCode {
    let vm = demo_vm();
    // What the server will store: the defaults of upstream's webhook, then its checks.
    let mut stored = vm.clone();
    defaults(&mut stored);
    let errors = validate(&stored);
    if !errors.is_empty() {
        for e in errors {
            eprintln!("{e}");
        }
        return ExitCode::FAILURE;
    }
    match to_yaml(&vm) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
