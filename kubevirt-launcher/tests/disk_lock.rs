//! Two guests never write one disk: a second launcher whose VMI claims a volume that a running
//! launcher writes is refused (exit 3, the image named), and takes it once the first has ended.
//! A node agent that lost track of a launcher (killed and restarted) cannot start a second guest
//! on the same persistent disk.

mod common;

use common::{Launcher, demo_image, run_command, tempdir};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn vmi(name: &str, image: &str) -> String {
    format!(
        r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {{name: {name}, namespace: default}}
spec:
  domain:
    memory: {{guest: 64Mi}}
    firmware:
      kernelBoot: {{container: {{image: "{image}", kernelPath: /boot/demo.elf}}}}
    devices:
      autoattachPodInterface: false
      disks:
      - {{name: data, disk: {{bus: virtio}}}}
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: data-claim}}}}
"##
    )
}

/// A launcher for VMI "second" in `dir` whose claims live in `volumes` (the first one's).
fn second(dir: &Path, volumes: &Path, image: &str) -> Command {
    let file = dir.join("vmi.yaml");
    std::fs::write(&file, vmi("second", image)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"));
    cmd.args(["run", file.to_str().unwrap()])
        .args(["--run-dir", dir.join("run").to_str().unwrap()])
        .args(["--cache-dir", dir.join("cache").to_str().unwrap()])
        .args(["--volumes-dir", volumes.to_str().unwrap()]);
    cmd
}

#[test]
fn a_disk_in_use_by_a_running_guest_is_refused_to_a_second_one() {
    let dir = tempdir("lock-first");
    let other = tempdir("lock-second");
    let image = demo_image(&dir);
    let claim = dir.join("volumes/data/disk.img");
    std::fs::create_dir_all(claim.parent().unwrap()).unwrap();
    std::fs::write(&claim, vec![0u8; 4 << 20]).unwrap();

    let mut first = Launcher::spawn(run_command(&dir, &vmi("first", &image), &[]));
    first.expect("demo# ");
    let out = second(&other, &dir.join("volumes"), &image)
        .arg("--quiet")
        .output()
        .expect("run kubevirt-launcher");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a launch failure: {err}");
    assert!(
        err.contains("in use by another VM") && err.contains("disk.img"),
        "{err}"
    );

    // The first guest reboots (a fresh VM over the same disks) and still holds its disk.
    first.type_text("reboot\r");
    first.expect("rebooting");
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.expect("demo# ").matches("demo# ").count() < 2 {
        assert!(Instant::now() < deadline, "no prompt after the reboot");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = second(&other, &dir.join("volumes"), &image)
        .arg("--quiet")
        .output()
        .expect("run kubevirt-launcher");
    assert_eq!(
        out.status.code(),
        Some(3),
        "still held after the reboot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    first.type_text("poweroff\r");
    let (status, out) = first.wait();
    assert!(status.success(), "{out}");

    // Once the first launcher has ended, the disk is free.
    let mut again = Launcher::spawn(second(&other, &dir.join("volumes"), &image));
    again.expect("demo# ");
    again.type_text("poweroff\r");
    let (status, out) = again.wait();
    assert!(status.success(), "{out}");
}
