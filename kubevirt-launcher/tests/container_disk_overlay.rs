//! containerDisks the upstream way, through real launches: the image's disk file is extracted
//! once into the cache and shared read-only by every VMI that uses it; each VMI writes to its
//! own qcow2 overlay (backing: that base) in its run directory, removed when the VMI ends. A
//! raw and a qcow2 disk file both work, told apart by content.

mod common;

use common::{ImageBlobs, Launcher, demo_image, demo_vmi, push, start_registry, tempdir};
use std::path::{Path, PathBuf};
use std::process::Command;

fn files_under(dir: &Path) -> Vec<PathBuf> {
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

fn vmi(name: &str, kernel_image: &str, disk_image: &str) -> String {
    demo_vmi(
        name,
        kernel_image,
        "16Mi",
        "autoattachPodInterface: false\ndisks:\n- {name: root, disk: {bus: virtio}}",
        &format!("volumes:\n- {{name: root, containerDisk: {{image: \"{disk_image}\"}}}}"),
    )
}

/// `kubevirt-launcher run` of `yaml` with its own run directory `run` and the shared `cache`.
fn launch(dir: &Path, name: &str, yaml: &str, cache: &Path, registry: &str) -> Launcher {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"));
    cmd.args(["run", file.to_str().unwrap()])
        .args(["--run-dir", dir.join(name).to_str().unwrap()])
        .args(["--cache-dir", cache.to_str().unwrap()])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()])
        .args(["--plain-http-registry", registry]);
    Launcher::spawn(cmd)
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (qemu-utils)");
    assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
}

#[test]
fn two_vmis_share_one_read_only_base_and_each_writes_its_own_overlay() {
    let dir = tempdir("cd-overlay");
    let (_registry, host) = start_registry(&dir);
    let root: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    push(
        &host,
        "kubevirt/root",
        "v1",
        &ImageBlobs::with(&[("disk/root.img", &root)]),
    );
    let kernel = demo_image(&dir);
    let cache = dir.join("cache");
    let disk = format!("{host}/kubevirt/root:v1");
    let mut a = launch(&dir, "a", &vmi("a", &kernel, &disk), &cache, &host);
    a.expect("demo# ");
    let mut b = launch(&dir, "b", &vmi("b", &kernel, &disk), &cache, &host);
    b.expect("demo# ");
    for (l, run) in [(&mut a, "a"), (&mut b, "b")] {
        let overlay = dir.join(run).join("ephemeral/overlays/root.qcow2");
        let head = std::fs::read(&overlay).unwrap();
        assert_eq!(&head[..4], b"QFI\xfb", "{run}'s overlay is a qcow2 image");
        assert!(
            head.len() < 1 << 20,
            "{run}'s overlay is not a copy of the disk ({} bytes)",
            head.len()
        );
        l.type_text("disks\r");
        l.expect("vda: 1048576 bytes");
        l.type_text("disktest\r");
        l.expect("vda: wrote sector 1, flushed, read it back: ok");
    }
    // One base in the cache, for both VMIs, byte-for-byte what was pushed.
    let bases: Vec<_> = files_under(&cache)
        .into_iter()
        .filter(|p| std::fs::read(p).unwrap() == root)
        .collect();
    assert_eq!(bases.len(), 1, "one shared base: {bases:?}");
    let meta = std::fs::metadata(&bases[0]).unwrap();
    assert!(meta.permissions().readonly(), "the base file is read-only");
    // Both VMIs hold it with a shared lock: another reader may open it, a writer may not.
    use kubevirt_vmm::virtio::block::{BackendError, RawFile};
    assert!(
        RawFile::open(&bases[0], true).is_ok(),
        "shared with readers"
    );
    assert!(
        matches!(
            RawFile::open(&bases[0], false),
            Err(BackendError::InUse { .. })
        ),
        "never opened for writing while VMIs use it"
    );
    // Each overlay took its guest's write (the demo guest writes a marker to sector 1).
    for run in ["a", "b"] {
        let overlay = std::fs::read(dir.join(run).join("ephemeral/overlays/root.qcow2")).unwrap();
        assert!(
            overlay.windows(19).any(|w| w == b"kubevirt-rs demo gu"),
            "{run}'s overlay holds its guest's write"
        );
    }
    for (mut l, run) in [(a, "a"), (b, "b")] {
        l.type_text("poweroff\r");
        let (status, out) = l.wait();
        assert!(status.success(), "{out}");
        assert!(
            !dir.join(run).join("ephemeral").exists(),
            "{run}'s overlay is removed with its VMI"
        );
    }
    assert_eq!(
        std::fs::read(&bases[0]).unwrap(),
        root,
        "the base never changes"
    );
}

#[test]
fn a_qcow2_container_disk_boots_through_its_overlay() {
    let dir = tempdir("cd-qcow2");
    let (_registry, host) = start_registry(&dir);
    // A 3 MiB qcow2 disk with data in its first MiB: the guest sees the virtual size.
    let raw = dir.join("root.raw");
    std::fs::write(&raw, vec![0x42u8; 1 << 20]).unwrap();
    let q = dir.join("root.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    qemu_img(&["resize", "-q", q.to_str().unwrap(), "3M"]);
    let qcow2 = std::fs::read(&q).unwrap();
    push(
        &host,
        "kubevirt/qroot",
        "v1",
        &ImageBlobs::with(&[("disk/root.qcow2", &qcow2)]),
    );
    let kernel = demo_image(&dir);
    let cache = dir.join("cache");
    let disk = format!("{host}/kubevirt/qroot:v1");
    let mut l = launch(&dir, "q", &vmi("q", &kernel, &disk), &cache, &host);
    l.expect("demo# ");
    l.type_text("disks\r");
    l.expect("vda: 3145728 bytes");
    l.type_text("disktest\r");
    l.expect("vda: wrote sector 1, flushed, read it back: ok");
    l.type_text("poweroff\r");
    let (status, out) = l.wait();
    assert!(status.success(), "{out}");
    assert!(
        files_under(&cache)
            .iter()
            .any(|p| std::fs::read(p).unwrap() == qcow2),
        "the cached qcow2 base is unchanged"
    );
    assert!(!dir.join("q/ephemeral").exists());
}

/// A qcow2 disk file that names a backing file of its own (here a host path) is refused: the
/// launcher gives the chain itself (overlay → the image's disk file) and nothing an image says
/// makes it open another host file.
#[test]
fn a_container_disk_naming_its_own_backing_file_is_refused() {
    let dir = tempdir("cd-backing");
    let (_registry, host) = start_registry(&dir);
    let q = dir.join("evil.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "/etc/hostname",
        "-F",
        "raw",
        q.to_str().unwrap(),
        "1M",
    ]);
    let evil = std::fs::read(&q).unwrap();
    push(
        &host,
        "kubevirt/evil",
        "v1",
        &ImageBlobs::with(&[("disk/evil.qcow2", &evil)]),
    );
    let kernel = demo_image(&dir);
    let disk = format!("{host}/kubevirt/evil:v1");
    let mut l = launch(
        &dir,
        "e",
        &vmi("e", &kernel, &disk),
        &dir.join("cache"),
        &host,
    );
    let (status, out) = l.wait();
    assert_eq!(status.code(), Some(3), "a launch failure: {out}");
    assert!(
        out.contains("volume root") && out.contains("backing file"),
        "the volume and the backing file are named: {out}"
    );
}
