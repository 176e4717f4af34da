//! Registry mirrors in containerd's `hosts.toml` layout: a VMI names its containerDisk as
//! `quay.io/...` (unreachable from these machines) and `--registry-config-dir` points at a
//! `quay.io/hosts.toml` whose mirror is a local docker-registry holding the image: the launcher
//! pulls from the mirror and boots it through SeaBIOS. Without the configuration the same VMI
//! fails to launch, naming the registry.

mod common;

use common::{ImageBlobs, Launcher, push, start_registry, tempdir};
use kubevirt_vmm::testguest::boot_sector::{BOOT_SECTOR_LINE, boot_disk};
use std::path::Path;
use std::process::Command;

const VMI: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: mirrored, namespace: default}
spec:
  terminationGracePeriodSeconds: 0
  domain:
    memory: {guest: 32Mi}
    devices:
      autoattachPodInterface: false
      disks: [{name: boot, disk: {bus: virtio}, bootOrder: 1}]
  volumes: [{name: boot, containerDisk: {image: \"quay.io/kubevirt/bootsector-demo:v1\"}}]
";

fn launch(dir: &Path, mirrors: Option<&Path>) -> Launcher {
    let file = dir.join("vmi.yaml");
    std::fs::write(&file, VMI).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"));
    cmd.args(["run", file.to_str().unwrap()])
        .args(["--run-dir", dir.join("run").to_str().unwrap()])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()]);
    if let Some(m) = mirrors {
        cmd.arg("--registry-config-dir").arg(m);
    }
    Launcher::spawn(cmd)
}

#[test]
fn a_container_disk_comes_from_the_configured_mirror() {
    let dir = tempdir("mirror");
    let (_registry, host) = start_registry(&dir);
    push(
        &host,
        "kubevirt/bootsector-demo",
        "v1",
        &ImageBlobs::with(&[("disk/boot.img", &boot_disk(BOOT_SECTOR_LINE, 0x31, 1 << 20))]),
    );
    let config = dir.join("certs.d");
    std::fs::create_dir_all(config.join("quay.io")).unwrap();
    std::fs::write(
        config.join("quay.io/hosts.toml"),
        format!(
            "server = \"https://quay.io\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    let mut launcher = launch(&dir, Some(&config));
    launcher.expect(BOOT_SECTOR_LINE);
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");

    // The same VMI without the mirror configuration (and a cold cache) cannot get its disk.
    let bare = tempdir("no-mirror");
    let mut launcher = launch(&bare, None);
    let (status, out) = launcher.wait();
    assert_eq!(status.code(), Some(3), "a launch failure: {out}");
    assert!(out.contains("registry quay.io"), "{out}");
}
