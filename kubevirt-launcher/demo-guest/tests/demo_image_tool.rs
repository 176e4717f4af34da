//! `kubevirt-demo-image` as scripts run it: an OCI layout the launcher reads, the bare PVH ELF,
//! and usage errors that change nothing.

use std::process::Command;

const TOOL: &str = env!("CARGO_BIN_EXE_kubevirt-demo-image");

#[test]
fn writes_the_layout_and_the_elf() {
    let dir = kubevirt_testsupport::tempdir("demo-image-tool");
    let (layout, elf) = (dir.join("image"), dir.join("out/demo.elf"));
    let out = Command::new(TOOL)
        .arg(&layout)
        .arg("--elf")
        .arg(&elf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("oci:{}:demo", layout.display())),
        "{said}"
    );

    let index = std::fs::read_to_string(layout.join("index.json")).unwrap();
    assert!(
        index.contains(r#""org.opencontainers.image.ref.name":"demo""#),
        "{index}"
    );
    let written = std::fs::read(&elf).unwrap();
    assert_eq!(&written[..4], b"\x7fELF");
    assert_eq!(written, kubevirt_demo_guest::pvh_elf().unwrap());
}

#[test]
fn a_bad_option_is_refused_and_writes_nothing() {
    let dir = kubevirt_testsupport::tempdir("demo-image-bad");
    let out = Command::new(TOOL)
        .arg(dir.join("image"))
        .arg("--elf")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--elf needs a FILE"));
    assert!(!dir.join("image").exists());
}
