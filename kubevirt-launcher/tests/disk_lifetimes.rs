//! Disks keep upstream's lifetimes through a real launch: the demo guest writes a marker to
//! every writable disk (`disktest`) of a VMI with a containerDisk pulled from a real registry
//! (Debian's docker-registry on loopback), a persistentVolumeClaim the "node" prepared and an
//! emptyDisk. Afterwards the claim holds the marker, the cached image is byte-for-byte what was
//! pushed, and the overlay and emptyDisk are gone with the VMI.

mod common;

use common::{
    ImageBlobs, Launcher, demo_image, demo_vmi, push, run_command, start_registry, tempdir,
};
use std::path::Path;

/// What the guest writes to the containerDisk (vda); the guest image itself holds "vd?".
const MARKER: &[u8] = b"kubevirt-rs demo guest wrote this to vda";

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn container_disk_is_never_written_claims_persist_ephemeral_disks_vanish() {
    let dir = tempdir("lifetimes");
    let (_registry, host) = start_registry(&dir);
    let root: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    push(
        &host,
        "kubevirt/root",
        "v1",
        &ImageBlobs::with(&[("disk/root.img", &root)]),
    );
    let image = demo_image(&dir);
    // The node's prepared claim: <volumes>/<volume>/disk.img.
    let claim = dir.join("volumes/data/disk.img");
    std::fs::create_dir_all(claim.parent().unwrap()).unwrap();
    std::fs::write(&claim, vec![0u8; 2 << 20]).unwrap();
    let vmi = demo_vmi(
        "lifetimes",
        &image,
        "16Mi",
        "autoattachPodInterface: false
disks:
- {name: root, disk: {bus: virtio}}
- {name: data, disk: {bus: virtio}}
- {name: scratch, disk: {bus: virtio}}",
        &format!(
            "volumes:
- {{name: root, containerDisk: {{image: \"{host}/kubevirt/root:v1\"}}}}
- {{name: data, persistentVolumeClaim: {{claimName: data-claim}}}}
- {{name: scratch, emptyDisk: {{capacity: 1Mi}}}}"
        ),
    );
    let mut cmd = run_command(&dir, &vmi, &[]);
    cmd.args(["--plain-http-registry", &host]);
    let mut launcher = Launcher::spawn(cmd);
    launcher.expect("demo# ");
    assert!(
        dir.join("run/ephemeral").exists(),
        "the overlay and the emptyDisk live in the VMI's ephemeral directory while it runs"
    );
    launcher.type_text("disktest\r");
    for disk in ["vda", "vdb", "vdc"] {
        launcher.expect(&format!(
            "{disk}: wrote sector 1, flushed, read it back: ok"
        ));
    }
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");

    // The claim persists the guest's write.
    let data = std::fs::read(&claim).unwrap();
    assert!(data[512..].starts_with(b"kubevirt-rs demo guest wrote this to vdb"));
    // The cached image is exactly what was pushed, and no cached file took the guest's writes.
    let cached = files_under(&dir.join("cache"));
    assert!(
        cached.iter().any(|p| std::fs::read(p).unwrap() == root),
        "the extracted image is cached: {cached:?}"
    );
    for p in &cached {
        assert!(
            !contains(&std::fs::read(p).unwrap(), MARKER),
            "{} took a guest write",
            p.display()
        );
    }
    // The overlay and the emptyDisk vanished with the VMI.
    assert!(!dir.join("run/ephemeral").exists(), "{out}");
}

/// ConfigMap and Secret volumes, projected into the volumes directory as the kubelet mounts
/// them, reach the guest as read-only ISO disks with their labels; the guest reads the keys.
/// A missing optional Secret boots as an empty disk; a missing required one is refused.
#[test]
fn config_map_and_secret_disks_reach_the_guest() {
    let dir = tempdir("projected");
    let image = demo_image(&dir);
    let volumes = dir.join("volumes");
    std::fs::create_dir_all(volumes.join("app-config")).unwrap();
    std::fs::write(
        volumes.join("app-config/app.properties"),
        "color=blue\nsize=3\n",
    )
    .unwrap();
    std::fs::create_dir_all(volumes.join("creds")).unwrap();
    std::fs::write(volumes.join("creds/password"), "s3cr3t").unwrap();
    let vmi = |optional_missing: bool| {
        demo_vmi(
            "projected",
            &image,
            "16Mi",
            "autoattachPodInterface: false
disks:
- {name: app-config, disk: {bus: virtio}}
- {name: creds, disk: {bus: virtio}}
- {name: extra, disk: {bus: virtio}}",
            &format!(
                "volumes:
- {{name: app-config, configMap: {{name: app-config, volumeLabel: cfgdata}}}}
- {{name: creds, secret: {{secretName: creds}}}}
- {{name: extra, secret: {{secretName: extra, optional: {optional_missing}}}}}"
            ),
        )
    };
    let launch = |yaml: String| Launcher::spawn(run_command(&dir, &yaml, &[]));

    let (status, out) = launch(vmi(false)).wait();
    assert_eq!(status.code(), Some(3), "{out}");
    assert!(
        out.contains("volume extra: Secret is not projected into"),
        "{out}"
    );

    let mut launcher = launch(vmi(true));
    let out = launcher.expect("demo# ");
    assert!(out.contains("vda: ") && out.contains("read-only"), "{out}");
    assert!(out.contains("iso9660 label cfgdata"), "{out}");
    assert!(out.contains("iso9660 label CDROM"), "{out}");
    launcher.type_text("cat vda app.properties\r");
    launcher.expect("color=blue");
    launcher.expect("size=3");
    launcher.type_text("cat vdb password\r");
    launcher.expect("s3cr3t");
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
}

/// Detaches a loop device when the test ends.
struct LoopDevice(String);

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.0])
            .status();
    }
}

/// A claim the node prepared as a block device (here a loop device) and a dataVolume prepared
/// as a file both reach the guest; what the guest writes lands on the device.
#[test]
fn a_block_device_claim_and_a_data_volume_reach_the_guest() {
    let dir = tempdir("blockdev");
    let image = demo_image(&dir);
    let backing = dir.join("backing.img");
    std::fs::write(&backing, vec![0u8; 8 << 20]).unwrap();
    let out = std::process::Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .expect("losetup (util-linux)");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = LoopDevice(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let volumes = dir.join("volumes");
    std::fs::create_dir_all(volumes.join("dv")).unwrap();
    std::os::unix::fs::symlink(&device.0, volumes.join("blk")).unwrap();
    std::fs::write(volumes.join("dv/disk.img"), vec![0u8; 4 << 20]).unwrap();
    let vmi = demo_vmi(
        "blockdev",
        &image,
        "16Mi",
        "autoattachPodInterface: false
disks:
- {name: blk, disk: {bus: virtio}}
- {name: dv, disk: {bus: virtio}}",
        "volumes:
- {name: blk, persistentVolumeClaim: {claimName: block-claim}}
- {name: dv, dataVolume: {name: imported}}",
    );
    let mut launcher = Launcher::spawn(run_command(&dir, &vmi, &[]));
    let out = launcher.expect("demo# ");
    assert!(
        out.contains("vda: 8388608 bytes"),
        "the block device: {out}"
    );
    assert!(out.contains("vdb: 4194304 bytes"), "the data volume: {out}");
    launcher.type_text("disktest\r");
    launcher.expect("vdb: wrote sector 1, flushed, read it back: ok");
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
    let written = std::fs::read(&backing).unwrap();
    let text = b"kubevirt-rs demo guest wrote this to vda";
    assert_eq!(
        &written[512..512 + text.len()],
        text,
        "the guest's write is on the device"
    );
}

/// The open flags (`flags:` of /proc/PID/fdinfo, octal) of the launcher's descriptor for `file`.
fn open_flags(pid: u32, file: &Path) -> Option<i32> {
    let want = std::fs::canonicalize(file).ok()?;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if std::fs::read_link(entry.path()).ok()? == want {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            return i32::from_str_radix(flags.trim(), 8).ok();
        }
    }
    None
}

/// `disk.cache` reaches the file the launcher serves: writethrough opens it O_DSYNC (every
/// write durable), writeback does not (the guest's flushes are the fdatasyncs).
#[test]
fn disk_cache_modes_reach_the_open_image() {
    let dir = tempdir("cache");
    let image = demo_image(&dir);
    let volumes = dir.join("volumes");
    for claim in ["through", "back"] {
        std::fs::create_dir_all(volumes.join(claim)).unwrap();
        std::fs::write(volumes.join(claim).join("disk.img"), vec![0u8; 1 << 20]).unwrap();
    }
    let vmi = demo_vmi(
        "cache",
        &image,
        "16Mi",
        "autoattachPodInterface: false
disks:
- {name: through, disk: {bus: virtio}, cache: writethrough}
- {name: back, disk: {bus: virtio}, cache: writeback}",
        "volumes:
- {name: through, persistentVolumeClaim: {claimName: c1}}
- {name: back, persistentVolumeClaim: {claimName: c2}}",
    );
    let mut launcher = Launcher::spawn(run_command(&dir, &vmi, &[]));
    launcher.expect("demo# ");
    let flags = |claim: &str| {
        open_flags(launcher.pid(), &volumes.join(claim).join("disk.img"))
            .unwrap_or_else(|| panic!("the launcher has no descriptor for {claim}"))
    };
    assert_ne!(
        flags("through") & libc::O_DSYNC,
        0,
        "writethrough is O_DSYNC"
    );
    assert_eq!(flags("back") & libc::O_DSYNC, 0, "writeback is not");
    launcher.type_text("poweroff\r");
    let (status, out) = launcher.wait();
    assert!(status.success(), "{out}");
}
