//! A firmware-booted VM's firmware memory migrates: OVMF's variable store, a writable memory
//! slot the guest writes directly (KVM's dirty log does not cover it), arrives on the target
//! as the source's guest left it; a target with another firmware image refuses and the source
//! runs on. A memory-state snapshot keeps the store too: a VM restored from it over a fresh
//! copy of the empty store finds what the guest wrote. The "firmware" is a 64 KiB image whose reset vector halts (`cli; hlt`), so the
//! test needs no OVMF and runs on KVM-on-PVM (real mode is emulated there, and halting costs
//! nothing); the guest's variable writes are made through the store's file, which the VMM
//! maps shared.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use kubevirt_vmm::{
    BootSource, ConsoleConfig, Firmware, FirmwareBoot, MigrationControl, MigrationError,
    MigrationOptions, MigrationProgress, Vm, VmBuilder, VmConfig, VmState,
};
use vmm_sys_util::tempdir::TempDir;

const ROM_SIZE: usize = 64 << 10;
const VARS_SIZE: usize = 128 << 10;

/// A firmware image whose reset vector (16 bytes below its end) halts for good; `mark`
/// tells two images apart.
fn rom(path: &Path, mark: u8) {
    let mut image = vec![mark; ROM_SIZE];
    // cli; hlt; jmp back to the hlt
    image[ROM_SIZE - 16..ROM_SIZE - 12].copy_from_slice(&[0xfa, 0xf4, 0xeb, 0xfd]);
    std::fs::write(path, image).unwrap();
}

fn builder(code: &Path, vars: &Path) -> VmBuilder {
    let boot = FirmwareBoot {
        firmware: Firmware::Uefi {
            code: code.into(),
            vars: vars.into(),
        },
        boot_order: vec![],
        debug_log: None,
    };
    Vm::builder(
        VmConfig::new(1, 16 << 20, BootSource::Firmware(boot)).with_serial(ConsoleConfig::Sink),
    )
}

fn migrate(
    source: &Vm,
    target: VmBuilder,
) -> (
    Result<MigrationProgress, MigrationError>,
    Result<Vm, MigrationError>,
) {
    common::migrate(
        source,
        target,
        &MigrationOptions::default(),
        &MigrationControl::new(),
    )
}

/// The source's firmware with a variable store the guest wrote (a pattern), and a target
/// with a fresh copy of the empty store.
struct Setup {
    dir: TempDir,
    pattern: Vec<u8>,
}

impl Setup {
    fn new() -> (Setup, Vm) {
        let dir = TempDir::new().unwrap();
        let p = |n: &str| dir.as_path().join(n);
        rom(&p("code.fd"), 0xff);
        std::fs::write(p("src-vars.fd"), vec![0u8; VARS_SIZE]).unwrap();
        std::fs::write(p("dst-vars.fd"), vec![0u8; VARS_SIZE]).unwrap();
        let source = builder(&p("code.fd"), &p("src-vars.fd")).build().unwrap();
        source.start().unwrap();
        // The guest's variable writes, through the file the slot maps.
        let pattern: Vec<u8> = (0..VARS_SIZE).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::OpenOptions::new()
            .write(true)
            .open(p("src-vars.fd"))
            .unwrap()
            .write_all_at(&pattern, 0)
            .unwrap();
        (Setup { dir, pattern }, source)
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.as_path().join(name)
    }
}

#[test]
fn the_uefi_variable_store_the_guest_wrote_arrives_on_the_target() {
    let (setup, source) = Setup::new();
    let target = builder(&setup.path("code.fd"), &setup.path("dst-vars.fd"));
    let (sent, received) = migrate(&source, target);
    sent.unwrap();
    let target = received.unwrap();
    // The target's store (mapped shared: its file shows the slot) is the source's.
    assert_eq!(
        std::fs::read(setup.path("dst-vars.fd")).unwrap(),
        setup.pattern,
        "the target's UEFI variable store is not the source's"
    );
    target.start().unwrap();
    assert_eq!(target.state(), VmState::Running);
    target.stop();
}

#[test]
fn a_target_with_another_firmware_refuses_and_the_source_runs_on() {
    let (setup, source) = Setup::new();
    rom(&setup.path("other.fd"), 0xee);
    let target = builder(&setup.path("other.fd"), &setup.path("dst-vars.fd"));
    let (sent, received) = migrate(&source, target);
    let e = received.err().unwrap().to_string();
    assert!(
        e.contains("firmware image of 65536 bytes")
            && e.contains("give the target the source's firmware"),
        "{e}"
    );
    let sent = sent.unwrap_err().to_string();
    assert!(sent.contains("the migration target reported"), "{sent}");
    assert_eq!(source.state(), VmState::Running);
    source.stop();
}

#[test]
fn a_snapshot_keeps_the_uefi_variable_store_and_restores_it_over_a_fresh_copy() {
    let (setup, source) = Setup::new();
    source.pause().unwrap();
    let snap = setup.path("snap");
    source.snapshot(&snap).unwrap();
    source.stop();
    let restored = builder(&setup.path("code.fd"), &setup.path("dst-vars.fd"))
        .restore(&snap)
        .unwrap();
    assert_eq!(
        std::fs::read(setup.path("dst-vars.fd")).unwrap(),
        setup.pattern,
        "the restored VM's UEFI variable store is not the saved one"
    );
    restored.start().unwrap();
    assert_eq!(restored.state(), VmState::Running);
    restored.stop();
    // Another firmware image is refused, naming the snapshot's firmware file.
    rom(&setup.path("other.fd"), 0xee);
    let e = builder(&setup.path("other.fd"), &setup.path("dst-vars.fd"))
        .restore(&snap)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("firmware") && e.contains("give the target the source's firmware"),
        "{e}"
    );
}
