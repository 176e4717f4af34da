//! Live migration of a VMI with disks, between real confined launcher processes: a claim's
//! image lock moves from the source to the target (the target opens the claim without it,
//! takes it before it acks; a third launcher is then refused by the target's lock), and a
//! target that cannot take the lock refuses the migration with the disk named while the
//! source takes its lock back and runs on.

mod common;

use std::path::Path;

use common::{Launcher, demo_image, demo_vmi, run_command, tempdir};
use kubevirt_launcher_protocol::{ExitStatus, MigrateRequest, Phase, Request};
use kubevirt_vmm::virtio::block::{CacheMode, RawFile, open_image};

/// The demo guest with the claim `data` (`<volumes>/data/disk.img`) as a virtio disk.
fn vmi_with_claim(dir: &Path, name: &str) -> String {
    let image = demo_image(dir);
    demo_vmi(
        name,
        &image,
        "16Mi",
        "autoattachPodInterface: false\ndisks:\n- {name: data, disk: {bus: virtio}}",
        "volumes:\n- {name: data, persistentVolumeClaim: {claimName: data-claim}}",
    )
}

/// Creates the claim's image under `volumes`.
fn claim(volumes: &Path) -> std::path::PathBuf {
    let path = volumes.join("data/disk.img");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![0u8; 4 << 20]).unwrap();
    path
}

/// Makes `<dir>/volumes` the volumes directory `volumes` (the node's: shared storage).
fn share_volumes(dir: &Path, volumes: &Path) {
    std::os::unix::fs::symlink(volumes, dir.join("volumes")).unwrap();
}

/// Whether the image at `path` is free for a writer in this process (nobody holds a lock).
fn free(path: &Path) -> bool {
    RawFile::open(path, false).is_ok()
}

#[test]
fn a_claims_lock_moves_to_the_target_and_a_third_launcher_is_refused() {
    let src = tempdir("migrate-claim-source");
    let dst = tempdir("migrate-claim-target");
    let third = tempdir("migrate-claim-third");
    let vmi = vmi_with_claim(src.path(), "claimed");
    let volumes = src.path().join("volumes");
    let image = claim(&volumes);
    let mut source = Launcher::spawn(run_command(src.path(), &vmi, &[]));
    source.expect("demo# ");
    source.type_text("count\r");
    source.expect("count 1");
    assert!(!free(&image), "the source holds its claim");

    // The target opens the same claim while the source holds it.
    share_volumes(dst.path(), &volumes);
    let (mut target, addr) = common::incoming_target(dst.path(), &vmi, &[]);
    let control = common::control_client(src.path());
    control
        .act(&Request::Migrate(Box::new(MigrateRequest::new(addr))))
        .expect("migrate");
    let (status, out) = source.wait();
    assert_eq!(
        status.code(),
        Some(ExitStatus::Migrated.code().into()),
        "the source exits 'migrated':\n{out}"
    );

    let target_control = common::control_client(dst.path());
    common::wait_for_phase(&target_control, Phase::Running);
    target.type_text("count\r");
    target.expect("count 2");
    assert!(!free(&image), "the target holds the claim now");
    share_volumes(third.path(), &volumes);
    let mut cmd = run_command(third.path(), &vmi_with_claim(third.path(), "third"), &[]);
    let out = cmd.arg("--quiet").output().expect("run kubevirt-launcher");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "a launch failure: {err}");
    assert!(
        err.contains("in use by another VM") && err.contains("disk.img"),
        "{err}"
    );

    target.type_text("poweroff\r");
    let (status, out) = target.wait();
    assert!(status.success(), "{out}");
    assert!(free(&image), "released when the target ended");
}

#[test]
fn a_target_that_cannot_lock_a_claim_refuses_and_the_source_keeps_it_and_runs_on() {
    let src = tempdir("migrate-claim-refused-source");
    let dst = tempdir("migrate-claim-refused-target");
    let vmi = vmi_with_claim(src.path(), "refused");
    let image = claim(&src.path().join("volumes"));
    let mut source = Launcher::spawn(run_command(src.path(), &vmi, &[]));
    source.expect("demo# ");
    source.type_text("count\r");
    source.expect("count 1");

    // The target's claim is held by another VM (this process) when the handover comes.
    let target_volumes = dst.path().join("volumes");
    let target_image = claim(&target_volumes);
    let holder = RawFile::open(&target_image, false).expect("lock the target's claim");
    let (mut target, addr) = common::incoming_target(dst.path(), &vmi, &[]);
    let control = common::control_client(src.path());
    control
        .act(&Request::Migrate(Box::new(MigrateRequest::new(addr))))
        .expect("migrate");
    let outcome = common::migration_outcome(&control);
    assert_eq!(outcome.phase, "Failed", "{outcome:?}");
    let error = outcome.error.unwrap_or_default();
    assert!(
        error.contains("disk 0") && error.contains("in use by another VM"),
        "the target names the disk: {error}"
    );
    let (status, out) = target.wait();
    assert!(!status.success(), "the target gave up:\n{out}");
    drop(holder);

    // The source runs on, holding its claim again.
    assert_eq!(control.status().unwrap().phase, Phase::Running);
    source.type_text("count\r");
    source.expect("count 2");
    assert!(!free(&image), "the source holds its claim again");
    control.stop().expect("stop");
    let (status, out) = source.wait();
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(free(&image));
}

/// Bytes `[offset, offset + len)` of the file at `path`.
fn read_range(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// Every file under `dir`.
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

/// What the guest's `disktest` writes to sector 1 of its disk `vd<letter>`.
fn marker(letter: char) -> Vec<u8> {
    format!("kubevirt-rs demo guest wrote this to vd{letter}\n").into_bytes()
}

#[test]
fn a_container_disk_and_an_empty_disk_migrate_with_what_the_guest_wrote() {
    let src = tempdir("migrate-local-source");
    let dst = tempdir("migrate-local-target");
    let (_registry, host) = common::start_registry(src.path());
    let root: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8).collect();
    common::push(
        &host,
        "kubevirt/root",
        "v1",
        &common::ImageBlobs::with(&[("disk/root.img", &root)]),
    );
    let kernel = demo_image(src.path());
    let vmi = demo_vmi(
        "local",
        &kernel,
        "16Mi",
        "autoattachPodInterface: false\ndisks:\n- {name: root, disk: {bus: virtio}}\n- {name: scratch, disk: {bus: virtio}}",
        &format!(
            "volumes:\n- {{name: root, containerDisk: {{image: \"{host}/kubevirt/root:v1\"}}}}\n- {{name: scratch, emptyDisk: {{capacity: 8Mi}}}}"
        ),
    );
    let mut cmd = run_command(src.path(), &vmi, &[]);
    cmd.args(["--plain-http-registry", &host]);
    let mut source = Launcher::spawn(cmd);
    source.expect("demo# ");
    source.type_text("disktest\r");
    source.expect("vdb: wrote sector 1, flushed, read it back: ok");

    let (mut target, addr) =
        common::incoming_target(dst.path(), &vmi, &["--plain-http-registry", &host]);
    let control = common::control_client(src.path());
    control
        .act(&Request::Migrate(Box::new(MigrateRequest::new(addr))))
        .expect("migrate");
    let (status, out) = source.wait();
    assert_eq!(
        status.code(),
        Some(ExitStatus::Migrated.code().into()),
        "{out}"
    );
    let target_control = common::control_client(dst.path());
    common::wait_for_phase(&target_control, Phase::Running);

    // The target's own emptyDisk holds what the guest wrote on the source ...
    let ephemeral = dst.path().join("run/ephemeral");
    let scratch = ephemeral.join("empty-disks/scratch.img");
    assert_eq!(read_range(&scratch, 512, marker('b').len()), marker('b'));
    // ... and its fresh overlay over the same base too, the base showing through elsewhere
    // (read through the image layer from a copy: the target holds the overlay).
    let overlay = ephemeral.join("overlays/root.qcow2");
    let copy = dst.path().join("root-copy.qcow2");
    std::fs::copy(&overlay, &copy).unwrap();
    let base = files_under(&dst.path().join("cache"))
        .into_iter()
        .find(|p| std::fs::read(p).is_ok_and(|b| b == root))
        .expect("the target's base in its cache");
    let mut image = open_image(&copy, true, CacheMode::Writeback, &[base.as_path()]).unwrap();
    let mut disk = vec![0u8; root.len()];
    image.read_at(&mut disk, 0).unwrap();
    assert_eq!(&disk[512..512 + marker('a').len()], marker('a').as_slice());
    assert_eq!(&disk[..512], &root[..512], "the base shows through");
    assert_eq!(&disk[1024..], &root[1024..], "the base shows through");

    target.type_text("count\r");
    target.expect("count 1");
    target.type_text("poweroff\r");
    let (status, out) = target.wait();
    assert!(status.success(), "{out}");
}
