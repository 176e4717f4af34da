//! Issue 15 end to end, as a user drives it with kubectl on `kubevirt-local up`: DataVolumes
//! imported over HTTP (a qcow2 made by qemu-img, an xz-compressed raw into a Block claim), a
//! clone of the first,
//! blank one, one uploaded with `virtctl image-upload` and one whose URL answers 404; each
//! fills a claim of the default StorageClass that the node's provisioner made. A VM with `dataVolumeTemplates` boots once its disk is imported
//! and its guest reads the file the test put into the image; deleting the VM deletes its
//! DataVolume, claim and volume.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::node::*;
use kubevirt_testsupport::{
    DemoVm, Profile, controller_binary, demo_image, launcher_binary, tempdir, virtctl_binary,
};

const NODE: &str = "kv-datavolumes";
const MARKER: &str = "kubevirt-rs import marker 4711";

/// An ISO 9660 image (label DVMARK) holding `/marker.txt`, as raw, qcow2 and xz-compressed raw.
fn images(dir: &Path) {
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("marker.txt"), format!("{MARKER}\n")).unwrap();
    let iso = dir.join("disk.iso");
    run(Command::new("genisoimage")
        .args(["-quiet", "-V", "DVMARK", "-o"])
        .arg(&iso)
        .arg(&content));
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&iso)
        .arg(dir.join("disk.qcow2")));
    run(Command::new("xz").args(["-k", "-f"]).arg(&iso));
}

fn dv_yaml(name: &str, source: &str, storage: &str) -> String {
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: {name}}}\nspec:\n  source: {source}\n  storage: {storage}\n"
    )
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn data_volumes_import_into_local_volumes_and_a_vm_boots_with_one() {
    require_node!();
    let _node = node_slot();
    let launcher = launcher_binary(Profile::Debug);
    // `up` builds the importer image from the kubevirt-controller next to it.
    controller_binary(Profile::Debug);
    let dir = tempdir("datavolumes");
    let data = dir.join("data");
    let web = dir.join("web");
    std::fs::create_dir_all(&web).unwrap();
    images(&web);
    let port = serve_dir(web.clone());
    let (up, ready) = start_up_node(&data, NODE, &["--launcher", launcher.to_str().unwrap()]);
    assert!(ready["importerImage"].is_string(), "{ready}");
    let base = format!("http://{}:{port}", host_ip());
    let sc = up.ok(&["get", "storageclass"], None);
    assert!(sc.contains("local (default)"), "{sc}");

    // An http qcow2 into a Filesystem claim of the default class.
    let size = "{resources: {requests: {storage: 64Mi}}}";
    let qcow2 = format!("{{http: {{url: \"{base}/disk.qcow2\"}}}}");
    up.ok(&["apply", "-f", "-"], Some(&dv_yaml("qcow2", &qcow2, size)));
    // An xz-compressed raw into a Block claim.
    let xz = format!("{{http: {{url: \"{base}/disk.iso.xz\"}}}}");
    let block = "{volumeMode: Block, resources: {requests: {storage: 32Mi}}}";
    up.ok(
        &["apply", "-f", "-"],
        Some(&dv_yaml("xz-block", &xz, block)),
    );
    // A blank disk, and a URL that answers 404.
    let blank_size = "{resources: {requests: {storage: 32Mi}}}";
    up.ok(
        &["apply", "-f", "-"],
        Some(&dv_yaml("blank", "{blank: {}}", blank_size)),
    );
    let missing = format!("{{http: {{url: \"{base}/no-such.qcow2\"}}}}");
    up.ok(
        &["apply", "-f", "-"],
        Some(&dv_yaml("missing", &missing, size)),
    );

    let dv = up.dv_phase("qcow2", "Succeeded");
    assert_eq!(dv["status"]["progress"], "100.00%", "{dv}");
    let path = up.volume_path("qcow2");
    let disk = std::fs::read(path.join("disk.img")).expect("disk.img in the volume");
    assert!(
        contains(&disk, MARKER),
        "the image's content is in disk.img"
    );
    assert!(disk.len() >= 64 << 20, "disk.img is {} bytes", disk.len());
    let listed = up.ok(&["get", "dv", "qcow2"], None);
    assert!(
        listed.contains("Succeeded") && listed.contains("100.00%"),
        "{listed}"
    );

    up.dv_phase("xz-block", "Succeeded");
    let device = std::fs::canonicalize(up.volume_path("xz-block")).unwrap();
    assert!(
        device.to_string_lossy().starts_with("/dev/loop"),
        "{}",
        device.display()
    );
    let mut head = vec![0u8; 1 << 20];
    std::fs::File::open(&device)
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    assert!(contains(&head, MARKER), "the raw image is on the device");

    // A clone of the qcow2's claim, sized as its source.
    up.ok(
        &["apply", "-f", "-"],
        Some(&dv_yaml(
            "cloned",
            "{pvc: {namespace: default, name: qcow2}}",
            "{}",
        )),
    );
    let cloned = up.dv_phase("cloned", "Succeeded");
    let claim = up.get("pvc", "cloned").unwrap();
    let source = up.get("pvc", "qcow2").unwrap();
    assert_eq!(
        claim["status"]["capacity"]["storage"], source["status"]["capacity"]["storage"],
        "{cloned}"
    );
    let copy = std::fs::read(up.volume_path("cloned").join("disk.img")).unwrap();
    assert!(
        contains(&copy, MARKER),
        "the clone has the source's content"
    );

    up.dv_phase("blank", "Succeeded");
    let blank = std::fs::metadata(up.volume_path("blank").join("disk.img")).unwrap();
    assert!(blank.len() >= 32 << 20, "{}", blank.len());

    // `virtctl image-upload` makes the DataVolume, gets a token and streams the qcow2 through
    // the upload proxy; an upload with a forged token is refused.
    let virtctl = virtctl_binary(Profile::Debug);
    let out = Command::new(&virtctl)
        .arg("--kubeconfig")
        .arg(up.kubeconfig())
        .args([
            "image-upload",
            "dv",
            "uploaded",
            "--size",
            "32Mi",
            "--image-path",
        ])
        .arg(web.join("disk.qcow2"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("Processing completed successfully"), "{said}");
    let disk = std::fs::read(up.volume_path("uploaded").join("disk.img")).unwrap();
    assert!(
        contains(&disk, MARKER),
        "the upload's content is in disk.img"
    );
    let url = ready["url"].as_str().unwrap().to_string();
    let forged = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .args([
            "-H",
            "Authorization: Bearer forged.token",
            "--data-binary",
            "x",
        ])
        .arg(format!("{url}/cdi-upload-proxy/v1beta1/upload"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forged.stdout), "401");

    // The 404 says so on the DataVolume and never becomes a disk called ready.
    let failing = eventually("the 404 on the DataVolume", 120, || {
        up.get("dv", "missing").filter(|d| {
            d["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Running" && c["reason"] == "Error")
        })
    });
    assert_ne!(failing["status"]["phase"], "Succeeded", "{failing}");
    let running = failing["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Running")
        .unwrap()
        .clone();
    assert!(
        running["message"].as_str().unwrap_or("").contains("404"),
        "{running}"
    );

    // A VM whose disk is a dataVolumeTemplate: it starts once the import is done, and its
    // guest reads the file the test put into the image.
    let image = demo_image(&dir);
    let source = format!("{{http: {{url: \"{base}/disk.qcow2\"}}}}");
    let vm = DemoVm::new("dvvm", &image)
        .data_volume(&source, "48Mi")
        .yaml();
    up.ok(&["apply", "-f", "-"], Some(&vm));
    let vmi = eventually("the VM's instance Running", 300, || {
        up.get("vmi", "dvvm")
            .filter(|v| v["status"]["phase"] == "Running")
    });
    let dv = up
        .get("dv", "dvvm-root")
        .expect("the template's DataVolume");
    assert_eq!(dv["status"]["phase"], "Succeeded");
    assert_eq!(
        dv["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachine"
    );
    let uid = vmi["metadata"]["uid"].as_str().unwrap();
    let socket = data.join("node/launchers").join(uid).join("console.sock");
    let disks = eventually("the guest lists its disks", 60, || {
        console_answer(&socket, "disks", "DVMARK")
    });
    assert!(disks.contains("vda"), "{disks}");
    eventually("the guest reads the marker from its disk", 60, || {
        console_answer(&socket, "cat vda /marker.txt", MARKER)
    });

    // Deleting the VM deletes its DataVolume, its claim and, with the Delete policy, the volume.
    let root = up.volume_path("dvvm-root");
    up.ok(&["delete", "vm", "dvvm", "--wait=true"], None);
    eventually("the VM's volume deleted", 120, || {
        (up.get("dv", "dvvm-root").is_none()
            && up.get("pvc", "dvvm-root").is_none()
            && !root.exists())
        .then_some(())
    });
    up.ok(&["delete", "dv", "--all", "--wait=true"], None);
    eventually("every volume deleted", 120, || {
        let pvs = up.ok(&["get", "pv", "-o", "name"], None);
        pvs.trim().is_empty().then_some(())
    });
    drop(up);
    assert_nothing_left(&data);
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(
        !loops.contains(data.to_str().unwrap()),
        "loop devices left: {loops}"
    );
}
