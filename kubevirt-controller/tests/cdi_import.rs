//! The CDI importer against real components: images made by qemu-img, xz and zstd, served by a
//! real HTTP(S) server on 127.0.0.1, converted by qemu-img into a directory or a real loop
//! device, and the `kubevirt-controller cdi-importer` command run as the importer pod runs it.

mod cdi;

use cdi::harness::{OVERHEAD, http, into_dir, names_in, request};
use cdi::images::{self, MARKER, MIB, marker_at};
use cdi::loopdev::LoopDevice;
use cdi::server::Server;
use kubevirt_controller::cdi::import::checksum::Checksum;
use kubevirt_controller::cdi::import::format::{DiskFormat, Wrapper};
use kubevirt_controller::cdi::import::source::file::FileSource;
use kubevirt_controller::cdi::import::target::usable_space;
use kubevirt_controller::cdi::import::{ContentType, ImportSource, Progress, Target, import};
use kubevirt_testsupport::tempdir;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Images of 32 MiB with the marker, in every format and wrapping, in `dir`.
fn image_set(dir: &Path) -> Vec<(PathBuf, DiskFormat, Vec<Wrapper>)> {
    let raw = images::raw(dir, "raw.img", 32 * MIB);
    let qcow2 = images::convert(&raw, "qcow2", "disk.qcow2");
    let tar_of_qcow2 = images::tar(&qcow2, "qcow2.tar");
    vec![
        (qcow2.clone(), DiskFormat::Qcow2, vec![]),
        (
            images::convert(&raw, "vmdk", "disk.vmdk"),
            DiskFormat::Vmdk,
            vec![],
        ),
        (
            images::convert(&raw, "vdi", "disk.vdi"),
            DiskFormat::Vdi,
            vec![],
        ),
        (
            images::convert(&raw, "vpc", "disk.vhd"),
            DiskFormat::Vhd,
            vec![],
        ),
        (
            images::convert(&raw, "vhdx", "disk.vhdx"),
            DiskFormat::Vhdx,
            vec![],
        ),
        (images::xz(&raw), DiskFormat::Raw, vec![Wrapper::Xz]),
        (images::gz(&raw), DiskFormat::Raw, vec![Wrapper::Gzip]),
        (images::zst(&raw), DiskFormat::Raw, vec![Wrapper::Zstd]),
        (
            images::tar(&raw, "raw.tar"),
            DiskFormat::Raw,
            vec![Wrapper::Tar],
        ),
        (
            images::gz(&tar_of_qcow2),
            DiskFormat::Qcow2,
            vec![Wrapper::Gzip, Wrapper::Tar],
        ),
        (images::gz(&qcow2), DiskFormat::Qcow2, vec![Wrapper::Gzip]),
        (raw, DiskFormat::Raw, vec![]),
    ]
}

#[test]
fn every_format_over_http_becomes_a_raw_disk_with_the_marker() {
    let served = tempdir("cdi-served");
    let server = Server::start(served.to_path_buf(), None);
    let capacity = usable_space(64 * MIB, OVERHEAD);
    for (path, format, wrappers) in image_set(&served) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let claim = tempdir("cdi-claim");
        let (result, progress) = into_dir(
            &claim,
            http(&server.url(&format!("files/{name}"))),
            64 * MIB,
        );
        let outcome = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (outcome.format, &outcome.wrappers),
            (Some(format), &wrappers),
            "{name}"
        );
        let disk = claim.join("disk.img");
        assert_eq!(
            std::fs::metadata(&disk).unwrap().len(),
            capacity,
            "{name}: the claim's size less overhead"
        );
        assert_eq!(marker_at(&disk), MARKER, "{name}: the data");
        assert_eq!(progress.percent(), 100.0, "{name}");
        assert_eq!(
            names_in(&claim),
            ["disk.img"],
            "{name}: no scratch or temporary file is left"
        );
        assert!(
            std::fs::metadata(&disk).unwrap().blocks() * 512 < 8 * MIB,
            "{name}: the disk stays sparse"
        );
    }
}

#[test]
fn a_local_qcow2_is_converted_in_place() {
    let dir = tempdir("cdi-local");
    let raw = images::raw(&dir, "raw.img", 32 * MIB);
    let qcow2 = images::convert(&raw, "qcow2", "disk.qcow2");
    let claim = tempdir("cdi-claim");
    let (result, _) = into_dir(
        &claim,
        ImportSource::Data(Box::new(FileSource::new(&qcow2))),
        40 * MIB,
    );
    result.unwrap();
    assert_eq!(marker_at(&claim.join("disk.img")), MARKER);
    assert_eq!(names_in(&claim), ["disk.img"]);
}

#[test]
fn a_missing_url_fails_naming_it_and_leaves_no_disk() {
    let served = tempdir("cdi-served");
    let server = Server::start(served.to_path_buf(), None);
    let claim = tempdir("cdi-claim");
    std::fs::write(claim.join("disk.img"), b"from an earlier attempt").unwrap();
    let url = server.url("files/missing.qcow2");
    let (result, _) = into_dir(&claim, http(&url), 64 * MIB);
    let e = result.unwrap_err().to_string();
    assert!(e.contains(&url) && e.contains("404 Not Found"), "{e}");
    assert!(
        names_in(&claim).is_empty(),
        "no disk.img is left: {:?}",
        names_in(&claim)
    );
}

#[test]
fn an_html_page_is_not_a_disk() {
    let served = tempdir("cdi-served");
    std::fs::write(
        served.join("page"),
        "<!DOCTYPE html><html>download here</html>",
    )
    .unwrap();
    let server = Server::start(served.to_path_buf(), None);
    let claim = tempdir("cdi-claim");
    let (result, _) = into_dir(&claim, http(&server.url("files/page")), 64 * MIB);
    let e = result.unwrap_err().to_string();
    assert!(e.contains("not a disk image: it is an HTML page"), "{e}");
    assert!(names_in(&claim).is_empty());
}

#[test]
fn a_qcow2_with_a_backing_file_is_refused() {
    let served = tempdir("cdi-served");
    let raw = images::raw(&served, "raw.img", 16 * MIB);
    let base = images::convert(&raw, "qcow2", "base.qcow2");
    let overlay = served.join("overlay.qcow2");
    images::run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "qcow2",
            overlay.to_str().unwrap(),
        ],
    );
    let server = Server::start(served.to_path_buf(), None);
    let claim = tempdir("cdi-claim");
    let (result, _) = into_dir(&claim, http(&server.url("files/overlay.qcow2")), 64 * MIB);
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("the image is invalid: it has a backing file") && e.contains("base.qcow2"),
        "{e}"
    );
    assert!(names_in(&claim).is_empty());
}

#[test]
fn a_qcow2_reading_a_host_file_is_refused() {
    let served = tempdir("cdi-served");
    let secret = served.join("host-secret");
    std::fs::write(&secret, vec![7u8; MIB as usize]).unwrap();
    let image = served.join("external.qcow2");
    images::run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={},data_file_raw=on", secret.display()),
            image.to_str().unwrap(),
            "1M",
        ],
    );
    let server = Server::start(served.to_path_buf(), None);
    let claim = tempdir("cdi-claim");
    let (result, _) = into_dir(&claim, http(&server.url("files/external.qcow2")), 64 * MIB);
    let e = result.unwrap_err().to_string();
    assert!(
        e.contains("refers to other files") && e.contains("host-secret"),
        "{e}"
    );
    assert!(names_in(&claim).is_empty());
}

#[test]
fn an_image_larger_than_the_claim_is_refused_naming_both_sizes() {
    let served = tempdir("cdi-served");
    let raw = images::raw(&served, "raw.img", 32 * MIB);
    images::convert(&raw, "qcow2", "disk.qcow2");
    images::xz(&raw);
    let server = Server::start(served.to_path_buf(), None);
    let capacity = usable_space(16 * MIB, OVERHEAD);
    for name in ["disk.qcow2", "raw.img.xz"] {
        let claim = tempdir("cdi-claim");
        let (result, _) = into_dir(
            &claim,
            http(&server.url(&format!("files/{name}"))),
            16 * MIB,
        );
        let e = result.unwrap_err().to_string();
        assert!(
            e.contains(&capacity.to_string()),
            "{name}: names the room: {e}"
        );
        assert!(e.contains("A larger PVC is required"), "{name}: {e}");
        if name == "disk.qcow2" {
            assert!(
                e.contains(&(32 * MIB).to_string()),
                "names the virtual size: {e}"
            );
        }
        assert!(
            names_in(&claim).is_empty(),
            "{name}: {:?}",
            names_in(&claim)
        );
    }
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn the_checksum_is_verified_before_the_disk_is_put_in_place() {
    let served = tempdir("cdi-served");
    let raw = images::raw(&served, "raw.img", 8 * MIB);
    let qcow2 = images::convert(&raw, "qcow2", "disk.qcow2");
    let xz = images::xz(&raw);
    let tar = images::tar(&raw, "raw.tar");
    let server = Server::start(served.to_path_buf(), None);
    for (path, content_type) in [
        (&qcow2, ContentType::Kubevirt),
        (&xz, ContentType::Kubevirt),
        (&tar, ContentType::Kubevirt),
        (&tar, ContentType::Archive),
    ] {
        let name = path.file_name().unwrap().to_str().unwrap();
        let good = format!("sha256:{}", sha256_of(path));
        let bad = format!("sha256:{}", "0".repeat(64));
        for (checksum, ok) in [(good, true), (bad, false)] {
            let claim = tempdir("cdi-claim");
            let progress = Progress::new();
            let mut req = request(
                Target::Filesystem {
                    dir: claim.to_path_buf(),
                },
                http(&server.url(&format!("files/{name}"))),
                64 * MIB,
                &progress,
            );
            req.content_type = content_type;
            req.checksum = Some(Checksum::parse(&checksum).unwrap());
            match import(req) {
                Ok(_) => assert!(ok, "{name}: a wrong checksum must fail"),
                Err(e) => {
                    assert!(!ok, "{name} {content_type:?}: {e}");
                    assert!(
                        e.to_string()
                            .starts_with("checksum mismatch: expected sha256:000"),
                        "{e}"
                    );
                    assert!(
                        names_in(&claim).is_empty(),
                        "{name}: {:?}",
                        names_in(&claim)
                    );
                }
            }
        }
    }
}

#[test]
fn blank_makes_a_sparse_disk_of_the_claims_size() {
    let claim = tempdir("cdi-claim");
    let (result, progress) = into_dir(&claim, ImportSource::Blank, 1 << 30);
    result.unwrap();
    let meta = std::fs::metadata(claim.join("disk.img")).unwrap();
    assert_eq!(
        meta.len(),
        967 * MIB,
        "1 GiB less 5.5 %, rounded down to 1 MiB"
    );
    assert!(
        meta.blocks() * 512 < MIB,
        "sparse: {} blocks",
        meta.blocks()
    );
    assert_eq!(progress.percent(), 100.0);
}

#[test]
fn preallocation_allocates_every_block() {
    let claim = tempdir("cdi-claim");
    let progress = Progress::new();
    let mut req = request(
        Target::Filesystem {
            dir: claim.to_path_buf(),
        },
        ImportSource::Blank,
        16 * MIB,
        &progress,
    );
    req.preallocation = true;
    let outcome = import(req).unwrap();
    assert!(outcome.preallocation_applied);
    let meta = std::fs::metadata(claim.join("disk.img")).unwrap();
    assert_eq!(meta.len(), 15 * MIB);
    assert!(
        meta.blocks() * 512 >= meta.len(),
        "{} blocks",
        meta.blocks()
    );
}

#[test]
fn archive_content_is_unpacked_into_the_claim() {
    let served = tempdir("cdi-served");
    let raw = images::raw(&served, "raw.img", MIB);
    let tar = images::tar(&raw, "files.tar");
    images::xz(&tar);
    let server = Server::start(served.to_path_buf(), None);
    let claim = tempdir("cdi-claim");
    let progress = Progress::new();
    let mut req = request(
        Target::Filesystem {
            dir: claim.to_path_buf(),
        },
        http(&server.url("files/files.tar.xz")),
        64 * MIB,
        &progress,
    );
    req.content_type = ContentType::Archive;
    import(req).unwrap();
    assert_eq!(names_in(&claim), ["README", "disk"]);
    assert_eq!(std::fs::read(claim.join("README")).unwrap(), b"hello");
    assert_eq!(marker_at(&claim.join("disk/raw.img")), MARKER);
}

#[test]
fn a_block_volume_receives_the_image() {
    let served = tempdir("cdi-served");
    let raw = images::raw(&served, "raw.img", 32 * MIB);
    images::convert(&raw, "qcow2", "disk.qcow2");
    images::gz(&raw);
    let server = Server::start(served.to_path_buf(), None);
    let backing = tempdir("cdi-block");
    for name in ["disk.qcow2", "raw.img.gz"] {
        let Some(lo) = LoopDevice::attach(&backing.join("volume.img"), 48 * MIB) else {
            panic!("this test needs loop devices (root and the loop driver)");
        };
        let progress = Progress::new();
        let target = Target::Block {
            device: lo.device.clone(),
        };
        let outcome = import(request(
            target,
            http(&server.url(&format!("files/{name}"))),
            64 * MIB,
            &progress,
        ))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            outcome.disk_size,
            48 * MIB,
            "{name}: the whole device, no overhead"
        );
        assert_eq!(marker_at(&lo.device), MARKER, "{name}");
        assert_eq!(progress.percent(), 100.0);
        drop(lo);
        assert_eq!(
            marker_at(&backing.join("volume.img")),
            MARKER,
            "{name}: written through"
        );
    }

    // A blank Block volume reads as zeros, whatever the device held.
    let lo = LoopDevice::attach(&backing.join("blank.img"), 8 * MIB).unwrap();
    std::fs::write(&lo.device, vec![0x5au8; 8 * MIB as usize]).unwrap();
    let progress = Progress::new();
    let target = Target::Block {
        device: lo.device.clone(),
    };
    let outcome = import(request(target, ImportSource::Blank, 64 * MIB, &progress)).unwrap();
    assert!(outcome.preallocation_applied);
    let data = std::fs::read(&lo.device).unwrap();
    assert_eq!(data.len() as u64, 8 * MIB);
    assert!(data.iter().all(|b| *b == 0), "the old data is gone");
    drop(lo);

    // Too large for the device.
    let lo = LoopDevice::attach(&backing.join("small.img"), 16 * MIB).unwrap();
    let progress = Progress::new();
    let target = Target::Block {
        device: lo.device.clone(),
    };
    let e = import(request(
        target,
        http(&server.url("files/disk.qcow2")),
        64 * MIB,
        &progress,
    ))
    .unwrap_err();
    assert!(e.to_string().contains(&(16 * MIB).to_string()), "{e}");
}

fn importer_command(claim: &Path, term: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"));
    command
        .arg("cdi-importer")
        .arg("--data-dir")
        .arg(claim)
        .arg("--block-device")
        .arg(claim.join("no-such-device"))
        .arg("--scratch-dir")
        .arg(claim.join("no-scratch"))
        .arg("--termination-log")
        .arg(term)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--secret-headers-dir")
        .arg(claim.join("no-headers"))
        .env_clear()
        .envs(env.iter().copied());
    command
}

fn importer(claim: &Path, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let term = claim.with_extension("termination-log");
    let status = importer_command(claim, &term, env).status().unwrap();
    let message = std::fs::read_to_string(&term).unwrap_or_default();
    let _ = std::fs::remove_file(&term);
    (status, message)
}

#[test]
fn the_command_imports_as_the_importer_pod_and_reports_in_the_termination_message() {
    let served = tempdir("cdi-served");
    let raw = images::raw(&served, "raw.img", 16 * MIB);
    images::convert(&raw, "qcow2", "disk.qcow2");
    let server = Server::start(served.to_path_buf(), None);
    let claim = tempdir("cdi-claim");
    let url = server.url("files/disk.qcow2");
    let env = [
        ("IMPORTER_SOURCE", "http"),
        ("IMPORTER_ENDPOINT", url.as_str()),
        ("IMPORTER_CONTENTTYPE", "kubevirt"),
        ("IMPORTER_IMAGE_SIZE", "32Mi"),
        ("FILESYSTEM_OVERHEAD", "0.055"),
        ("OWNER_UID", "uid-1"),
    ];
    let (status, message) = importer(&claim, &env);
    assert!(status.success(), "{status}: {message}");
    assert_eq!(
        message,
        r#"{"preallocationApplied":false,"message":"Import Complete"}"#
    );
    assert_eq!(
        std::fs::metadata(claim.join("disk.img")).unwrap().len(),
        30 * MIB
    );
    assert_eq!(marker_at(&claim.join("disk.img")), MARKER);

    let missing = server.url("files/gone.img");
    let (status, message) = importer(
        &claim,
        &[
            ("IMPORTER_SOURCE", "http"),
            ("IMPORTER_ENDPOINT", missing.as_str()),
        ],
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        message.starts_with("Unable to process data: HTTP GET ") && message.contains("404"),
        "{message}"
    );
    assert!(!claim.join("disk.img").exists());

    let (status, message) = importer(
        &claim,
        &[("IMPORTER_SOURCE", "none"), ("IMPORTER_IMAGE_SIZE", "10Mi")],
    );
    assert!(status.success(), "{message}");
    assert_eq!(
        std::fs::metadata(claim.join("disk.img")).unwrap().len(),
        9 * MIB
    );

    let (status, message) = importer(
        &claim,
        &[("IMPORTER_SOURCE", "s3"), ("IMPORTER_ENDPOINT", "s3://b/k")],
    );
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        message,
        "the s3 data source is not supported by this importer yet"
    );

    // A registry that is not there: the failure names where it went.
    let (status, message) = importer(
        &claim,
        &[
            ("IMPORTER_SOURCE", "registry"),
            ("IMPORTER_ENDPOINT", "docker://127.0.0.1:1/disks/x:1"),
        ],
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        message.starts_with(
            "Unable to process data: connecting to https://127.0.0.1:1/v2/disks/x/manifests/1"
        ),
        "{message}"
    );
}

#[test]
fn sigterm_stops_the_import_and_removes_what_it_wrote() {
    let served = tempdir("cdi-served");
    images::raw(&served, "raw.img", 64 * MIB);
    let server = Server::start(served.to_path_buf(), None);
    let claim = tempdir("cdi-claim");
    let term = claim.with_extension("termination-log");
    let url = server.url("slow/raw.img");
    let env = [
        ("IMPORTER_SOURCE", "http"),
        ("IMPORTER_ENDPOINT", url.as_str()),
    ];
    let mut child = importer_command(&claim, &term, &env).spawn().unwrap();
    kubevirt_testsupport::eventually("the import to start writing", || {
        claim.join(".disk.img.importing").exists().then_some(())
    });
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
    let message = std::fs::read_to_string(&term).unwrap();
    let _ = std::fs::remove_file(&term);
    assert_eq!(message, "Import terminated by a signal before it completed");
    assert!(names_in(&claim).is_empty(), "{:?}", names_in(&claim));
}
