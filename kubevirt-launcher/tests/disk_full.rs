//! A claim on a full file system, through the real launcher (confined, as in its pod): the
//! demo guest's write to it pauses the VM (upstream's default `errorPolicy: stop`), the
//! launcher's status says paused with the disk and the error — what the node agent turns into
//! the VMI's `Paused` condition with reason `PausedIOError` — and once space is freed an
//! `unpause` runs the held write again: the guest reports it written, never an error.
//!
//! Needs root (it mounts a tmpfs).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Launcher, control_client, demo_image, demo_vmi, run_command, tempdir};
use kubevirt_launcher_protocol::Request;

/// Unmounts the tmpfs when the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_write_to_a_full_claim_pauses_the_vm_until_space_is_freed_and_it_is_unpaused() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempdir("disk-full");
    let image = demo_image(&dir);
    let claim = dir.join("volumes/data");
    std::fs::create_dir_all(&claim).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&claim)
        .output()
        .expect("mount");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _mounted = Mounted(claim.clone());
    // A sparse 4 MiB disk, and the rest of the file system taken by another file.
    std::fs::File::create(claim.join("disk.img"))
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let filler = claim.join("filler");
    let _ = std::fs::write(&filler, vec![1u8; 1 << 20]);
    let vmi = demo_vmi(
        "full",
        &image,
        "16Mi",
        "autoattachPodInterface: false\ndisks:\n- {name: data, disk: {bus: virtio}}",
        "volumes:\n- {name: data, persistentVolumeClaim: {claimName: data}}",
    );
    let mut launcher = Launcher::spawn(run_command(&dir, &vmi, &[]));
    launcher.expect("demo# ");
    let control = control_client(&dir);
    launcher.type_text("disktest\r");

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = control.status().unwrap();
        if s.paused {
            break s;
        }
        assert!(Instant::now() < deadline, "not paused: {s:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let error = status.io_error.expect("the disk error that paused it");
    assert!(
        error.contains("disk data") && error.contains("No space left"),
        "{error}"
    );

    std::fs::remove_file(&filler).unwrap();
    control.act(&Request::Unpause).unwrap();
    let out = launcher.expect("vda: wrote sector 1, flushed, read it back: ok");
    assert!(!out.contains("FAILED"), "the guest saw no error: {out}");
    let s = control.status().unwrap();
    assert!(!s.paused && s.io_error.is_none(), "{s:?}");
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
}
