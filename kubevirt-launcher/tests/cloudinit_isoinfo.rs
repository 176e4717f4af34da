//! The cloud-init images read back by the real ISO 9660 tools from genisoimage (`isoinfo`,
//! `isovfy`), the same family upstream KubeVirt writes them with. A missing tool fails the test:
//! run scripts/setup.sh.

use std::path::PathBuf;
use std::process::Command;

use kubevirt_api::core::v1::{CloudInitConfigDriveSource, CloudInitNoCloudSource};
use kubevirt_launcher::cloudinit::iso9660::IsoImage;
use kubevirt_launcher::cloudinit::{ConfigDrive, NoCloud, NoSecrets, VmiIdentity};

/// An image written to a file that is removed when dropped.
struct ImageFile(PathBuf);

impl ImageFile {
    fn new(test: &str, bytes: &[u8]) -> ImageFile {
        let path = std::env::temp_dir().join(format!(
            "kubevirt-launcher-{test}-{}.iso",
            std::process::id()
        ));
        std::fs::write(&path, bytes).expect("write the image to the temp dir");
        ImageFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temp paths are UTF-8")
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `tool args`, failing the test when the tool is missing or fails; returns stdout.
fn run(tool: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `{tool}` ({e}): run scripts/setup.sh to install genisoimage")
    });
    assert!(
        out.status.success(),
        "`{tool} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("tool output is UTF-8")
}

fn vmi() -> VmiIdentity {
    VmiIdentity {
        name: "testvmi".to_owned(),
        namespace: "default".to_owned(),
        uid: "b7e3fd86-1f4c-4c5e-9d0b-3b0f7e0c1a2d".to_owned(),
        hostname: None,
    }
}

fn no_cloud() -> NoCloud {
    let source = CloudInitNoCloudSource {
        user_data: Some("#cloud-config\npassword: fedora\nchpasswd: { expire: False }\n".into()),
        network_data: Some("version: 2\nethernets:\n  eth0:\n    dhcp4: true\n".into()),
        ..Default::default()
    };
    NoCloud::from_source(
        &source,
        "spec.volumes[1].cloudInitNoCloud",
        &vmi(),
        &NoSecrets,
    )
    .expect("valid source")
}

fn config_drive() -> ConfigDrive {
    let source = CloudInitConfigDriveSource {
        user_data: Some("#cloud-config\n".into()),
        network_data: Some(r#"{"links":[],"networks":[],"services":[]}"#.into()),
        ..Default::default()
    };
    ConfigDrive::from_source(
        &source,
        "spec.volumes[1].cloudInitConfigDrive",
        &vmi(),
        &NoSecrets,
    )
    .expect("valid source")
}

#[test]
fn nocloud_volume_id_is_cidata() {
    let image = ImageFile::new("nocloud-d", &no_cloud().to_iso().unwrap());
    let info = text(run("isoinfo", &["-d", "-i", image.path()]));
    assert!(info.contains("Volume id: cidata\n"), "{info}");
    assert!(info.contains("Joliet with UCS level 3 found"), "{info}");
    assert!(info.contains("Logical block size is: 2048"), "{info}");
}

#[test]
fn nocloud_joliet_listing_has_the_files() {
    let image = ImageFile::new("nocloud-l", &no_cloud().to_iso().unwrap());
    let listing = text(run("isoinfo", &["-J", "-l", "-i", image.path()]));
    for name in ["meta-data", "user-data", "network-config"] {
        assert!(
            listing.contains(&format!(" {name} \n")),
            "{name}: {listing}"
        );
    }
}

#[test]
fn nocloud_files_extract_exactly() {
    let disk = no_cloud();
    let image = ImageFile::new("nocloud-x", &disk.to_iso().unwrap());
    let extract = |name: &str| run("isoinfo", &["-J", "-x", name, "-i", image.path()]);
    assert_eq!(
        text(extract("/meta-data")),
        r#"{"instance-id":"testvmi.default","local-hostname":"testvmi"}"#
    );
    assert_eq!(extract("/user-data"), disk.user_data);
    assert_eq!(
        Some(extract("/network-config")),
        disk.network_config.clone()
    );
}

#[test]
fn nocloud_primary_tree_is_readable_too() {
    let disk = no_cloud();
    let image = ImageFile::new("nocloud-p", &disk.to_iso().unwrap());
    let listing = text(run("isoinfo", &["-l", "-i", image.path()]));
    assert!(listing.contains("META_DATA.;1"), "{listing}");
    let user = run("isoinfo", &["-x", "/USER_DATA.;1", "-i", image.path()]);
    assert_eq!(user, disk.user_data);
}

#[test]
fn nocloud_image_verifies() {
    let image = ImageFile::new("nocloud-v", &no_cloud().to_iso().unwrap());
    let report = text(run("isovfy", &["-i", image.path()]));
    assert!(report.contains("No errors found"), "{report}");
}

#[test]
fn config_drive_volume_id_and_nested_files() {
    let drive = config_drive();
    let image = ImageFile::new("configdrive", &drive.to_iso().unwrap());
    let info = text(run("isoinfo", &["-d", "-i", image.path()]));
    assert!(info.contains("Volume id: config-2\n"), "{info}");

    let listing = text(run("isoinfo", &["-J", "-l", "-i", image.path()]));
    assert!(
        listing.contains("Directory listing of /openstack/latest/"),
        "{listing}"
    );
    for name in ["meta_data.json", "user_data", "network_data.json"] {
        assert!(
            listing.contains(&format!(" {name} \n")),
            "{name}: {listing}"
        );
    }

    let extract = |name: &str| run("isoinfo", &["-J", "-x", name, "-i", image.path()]);
    assert_eq!(
        text(extract("/openstack/latest/meta_data.json")),
        r#"{"instance_id":"testvmi.default","hostname":"testvmi","name":"testvmi","uuid":"b7e3fd86-1f4c-4c5e-9d0b-3b0f7e0c1a2d"}"#
    );
    assert_eq!(extract("/openstack/latest/user_data"), drive.user_data);
    assert_eq!(
        Some(extract("/openstack/latest/network_data.json")),
        drive.network_data.clone()
    );

    let report = text(run("isovfy", &["-i", image.path()]));
    assert!(report.contains("No errors found"), "{report}");
}

#[test]
fn many_files_and_multi_sector_contents() {
    // Enough long names that each directory spans several sectors, and contents that span
    // several sectors and end mid-sector.
    let mut image = IsoImage::new("stress");
    let mut expected = Vec::new();
    for dir in ["a", "b/c"] {
        for i in 0..40 {
            let path = format!("{dir}/file-{i:02}-{}", "x".repeat(50));
            let data: Vec<u8> = (0..(i * 997 + 1)).map(|b| (b % 251) as u8).collect();
            expected.push((path.clone(), data.clone()));
            image = image.with_file(path, data);
        }
    }
    image = image.with_file("empty", Vec::new());
    let file = ImageFile::new("stress", &image.to_bytes().unwrap());
    let report = text(run("isovfy", &["-i", file.path()]));
    assert!(report.contains("No errors found"), "{report}");
    for (path, data) in expected.iter().step_by(7) {
        let got = run(
            "isoinfo",
            &["-J", "-x", &format!("/{path}"), "-i", file.path()],
        );
        assert_eq!(&got, data, "{path}");
    }
    let empty = run("isoinfo", &["-J", "-x", "/empty", "-i", file.path()]);
    assert!(empty.is_empty());
    let listing = text(run("isoinfo", &["-J", "-l", "-i", file.path()]));
    assert_eq!(listing.matches(" file-").count(), 80, "{listing}");
}

#[test]
fn blkid_sees_the_labels_cloud_init_looks_for() {
    // cloud-init finds its disk with `blkid -t LABEL=cidata` (or config-2).
    for (name, bytes, label) in [
        ("blkid-nocloud", no_cloud().to_iso().unwrap(), "cidata"),
        (
            "blkid-configdrive",
            config_drive().to_iso().unwrap(),
            "config-2",
        ),
    ] {
        let image = ImageFile::new(name, &bytes);
        let probe = text(run("blkid", &["-p", "-o", "export", image.path()]));
        assert!(probe.contains(&format!("LABEL={label}\n")), "{probe}");
        assert!(probe.contains("TYPE=iso9660\n"), "{probe}");
    }
}

/// Runs `tool args` and returns stdout and stderr together.
fn run_all(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run `{tool}` ({e}): run scripts/setup.sh to install it")
    });
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`{tool} {}` failed: {all}",
        args.join(" ")
    );
    all
}

#[test]
fn libarchive_reads_the_files() {
    // bsdtar (libarchive) is a second, independent ISO 9660 + Joliet reader.
    let drive = config_drive();
    let image = ImageFile::new("bsdtar", &drive.to_iso().unwrap());
    let listing = text(run("bsdtar", &["-tf", image.path()]));
    assert!(
        listing.contains("openstack/latest/user_data\n"),
        "{listing}"
    );
    let user = run(
        "bsdtar",
        &["-xOf", image.path(), "openstack/latest/user_data"],
    );
    assert_eq!(user, drive.user_data);
    let meta = run(
        "bsdtar",
        &["-xOf", image.path(), "openstack/latest/meta_data.json"],
    );
    assert_eq!(meta, drive.meta_data_bytes());
}

#[test]
fn xorriso_loads_the_image_without_complaint() {
    // libisofs (xorriso) is a third reader, and a strict one: it reports malformed trees.
    let disk = no_cloud();
    let image = ImageFile::new("xorriso", &disk.to_iso().unwrap());
    let out = run_all(
        "xorriso",
        &[
            "-report_about",
            "WARNING",
            "-indev",
            image.path(),
            "-toc",
            "-find",
            "/",
        ],
    );
    for bad in ["WARNING", "SORRY", "FAILURE", "FATAL"] {
        assert!(!out.contains(bad), "{out}");
    }
    assert!(out.contains("ISO loaded   : Joliet"), "{out}");
    assert!(out.contains("'/network-config'"), "{out}");
    assert!(out.contains(", cidata"), "{out}");
}
