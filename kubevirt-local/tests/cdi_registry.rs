//! Issue 15's registry import end to end, as a user drives it with kubectl on `kubevirt-local
//! up`: a containerDisk-style image (a qcow2 made by qemu-img under `/disk`, holding a marker
//! this test wrote) pushed to Debian's docker-registry; a DataVolume with `source.registry`
//! pulls it (the registry is plain HTTP: `up --plain-http-registry` makes it one of CDI's
//! insecure registries) into a claim, and an image that does not exist says so in the
//! DataVolume's conditions. The default class's StorageProfile is there for kubectl, and a
//! class of an unknown provisioner gets one without claim property sets, so a DataVolume of it
//! without access modes is refused by name. `virtctl image-upload pvc` uploads into a claim.
//! With `pullMethod: node` the node's runtime pulls a `FROM scratch` disk image: the importer
//! pod runs it as its `server` container, and an image that cannot be pulled shows
//! `ErrImagePull` on the DataVolume.

mod common;

use std::path::Path;
use std::process::Command;

use common::node::*;
use kubevirt_testsupport::oci::ImageBuilder;
use kubevirt_testsupport::registry::Registry;
use kubevirt_testsupport::{Profile, controller_binary, launcher_binary, tempdir, virtctl_binary};

const NODE: &str = "kv-cdi-registry";
const MARKER: &str = "kubevirt-rs registry import marker 2718";

/// A 4 MiB raw disk with the marker at 1 MiB.
fn raw() -> Vec<u8> {
    let mut data = vec![0u8; 4 << 20];
    data[1 << 20..(1 << 20) + MARKER.len()].copy_from_slice(MARKER.as_bytes());
    // Not only zeros and the marker: every 4 KiB block of the first MiB differs.
    for (i, block) in data[..1 << 20].chunks_mut(4096).enumerate() {
        block[..8].copy_from_slice(&(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    }
    data
}

/// [`raw`] as qcow2.
fn qcow2(dir: &Path) -> Vec<u8> {
    let raw_path = dir.join("disk.raw");
    std::fs::write(&raw_path, raw()).unwrap();
    let raw = raw_path;
    let qcow2 = dir.join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2));
    std::fs::read(qcow2).unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn dv_yaml(name: &str, url: &str) -> String {
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {{name: {name}}}\nspec:\n  source: {{registry: {{url: \"{url}\"}}}}\n  storage: {{resources: {{requests: {{storage: 16Mi}}}}}}\n"
    )
}

/// A `pullMethod: node` DataVolume whose importer pod is kept after it succeeds.
fn node_pull_yaml(name: &str, url: &str) -> String {
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: {name}\n  annotations: {{cdi.kubevirt.io/storage.pod.retainAfterCompletion: \"true\"}}\nspec:\n  source: {{registry: {{url: \"{url}\", pullMethod: node}}}}\n  storage: {{resources: {{requests: {{storage: 16Mi}}}}}}\n"
    )
}

/// A node (with the launcher and the CDI importer) whose registry holds a FROM-scratch image
/// with only `disk/disk.qcow2` ([`qcow2`]) as `REPO:v1`. Dropped in field order: the node
/// first, then the registry, then the directory.
struct DiskNode {
    up: Up,
    registry: Registry,
    reference: String,
    _dir: kubevirt_testsupport::TestDir,
}

impl DiskNode {
    fn start(tag: &str, repo: &str) -> Self {
        let launcher = launcher_binary(Profile::Debug);
        controller_binary(Profile::Debug);
        let dir = tempdir(tag);
        let registry =
            Registry::start_on(&dir.join("registry"), &host_ip()).expect("docker-registry");
        let image = ImageBuilder::new()
            .dir("disk")
            .file("disk/disk.qcow2", qcow2(&dir), 0o644)
            .build()
            .unwrap();
        let reference = registry.push(repo, "v1", &image).unwrap();
        let (up, _ready) = start_up_node(
            &dir.join("data"),
            NODE,
            &[
                "--launcher",
                launcher.to_str().unwrap(),
                "--plain-http-registry",
                registry.address(),
            ],
        );
        Self {
            up,
            registry,
            reference,
            _dir: dir,
        }
    }
}

#[test]
fn a_registry_image_is_imported_and_a_missing_one_is_named() {
    require_node!();
    let _node = node_slot();
    let node = DiskNode::start("cdi-registry", "disks/marker");
    let (up, registry, reference) = (&node.up, &node.registry, &node.reference);
    up.ok(
        &["apply", "-f", "-"],
        Some(&dv_yaml("from-registry", &format!("docker://{reference}"))),
    );
    let missing = format!("docker://{}/disks/no-such:v1", registry.address());
    up.ok(&["apply", "-f", "-"], Some(&dv_yaml("missing", &missing)));

    let dv = up.dv_phase("from-registry", "Succeeded");
    assert_eq!(dv["status"]["progress"], "100.00%", "{dv}");
    let volume = up.volume_path("from-registry");
    let disk = std::fs::read(volume.join("disk.img")).expect("disk.img in the volume");
    assert!(contains(&disk, MARKER), "the image's disk is in disk.img");
    assert!(disk.len() >= 8 << 20, "disk.img is {} bytes", disk.len());
    let leftovers: Vec<_> = std::fs::read_dir(&volume)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, ["disk.img"], "nothing but the disk stays");

    let failing = eventually("the missing image on the DataVolume", 60, || {
        up.get("dv", "missing")
            .filter(|d| condition(d, "Running")["reason"] == "Error")
    });
    assert_ne!(failing["status"]["phase"], "Succeeded", "{failing}");
    let running = condition(&failing, "Running");
    let message = running["message"].as_str().unwrap_or("");
    assert!(
        message.contains("not found") && message.contains("404"),
        "{running}"
    );

    // The default class's StorageProfile, as upstream shows it.
    let profile = up.ok(&["get", "storageprofile", "local", "-o", "yaml"], None);
    for line in [
        "storageClass: local",
        "provisioner: kubevirt-rs.io/local-volume",
        "volumeMode: Filesystem",
        "volumeMode: Block",
        "- ReadWriteOnce",
        "cloneStrategy: copy",
        "dataImportCronSourceFormat: pvc",
    ] {
        assert!(profile.contains(line), "{line:?} in\n{profile}");
    }
    up.ok(&["delete", "dv", "--all", "--wait=true"], None);
}

#[test]
fn image_upload_pvc_fills_a_claim_and_profiles_follow_classes() {
    require_node!();
    let _node = node_slot();
    let launcher = launcher_binary(Profile::Debug);
    controller_binary(Profile::Debug);
    let virtctl = virtctl_binary(Profile::Debug);
    let dir = tempdir("cdi-upload-pvc");
    let image = dir.join("disk.qcow2");
    std::fs::write(&image, qcow2(&dir)).unwrap();
    let (up, _ready) = start_up_node(
        &dir.join("data"),
        NODE,
        &["--launcher", launcher.to_str().unwrap()],
    );
    let upload = |args: &[&str]| {
        Command::new(&virtctl)
            .arg("--kubeconfig")
            .arg(up.kubeconfig())
            .args(["image-upload", "pvc"])
            .args(args)
            .arg("--image-path")
            .arg(&image)
            .output()
            .unwrap()
    };
    let out = upload(&["uploaded", "--size", "16Mi"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("PVC default/uploaded created"), "{said}");
    assert!(said.contains("Processing completed successfully"), "{said}");
    let disk = std::fs::read(up.volume_path("uploaded").join("disk.img")).unwrap();
    assert!(
        contains(&disk, MARKER),
        "the upload's content is in disk.img"
    );
    let claim = up.get("pvc", "uploaded").unwrap();
    assert_eq!(
        claim["metadata"]["annotations"]["cdi.kubevirt.io/storage.pod.phase"], "Succeeded",
        "{claim}"
    );
    eventually("the upload pod gone", 30, || {
        up.pod("cdi-upload-uploaded").is_none().then_some(())
    });
    // Again: refused, the claim is populated; --no-create on a missing claim is named too.
    let out = upload(&["uploaded", "--size", "16Mi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already successfully imported"),
        "{err}"
    );
    let out = upload(&["absent", "--no-create"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("PVC absent not found"),
        "{err}"
    );

    // A class of a provisioner CDI does not know: a profile without claim property sets, and
    // a DataVolume of it without access modes says what to set.
    up.ok(
        &["apply", "-f", "-"],
        Some("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: mystery}\nprovisioner: example.com/mystery\n"),
    );
    let profile = eventually("the mystery class's profile", 30, || {
        up.get("storageprofile", "mystery")
            .filter(|p| p["status"]["provisioner"] == "example.com/mystery")
    });
    assert_eq!(
        profile["status"]["claimPropertySets"],
        serde_json::json!([]),
        "{profile}"
    );
    up.ok(
        &["apply", "-f", "-"],
        Some("apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata: {name: mystery-dv}\nspec:\n  source: {blank: {}}\n  storage: {storageClassName: mystery, resources: {requests: {storage: 16Mi}}}\n"),
    );
    let dv = eventually("the DataVolume refused", 30, || {
        up.get("dv", "mystery-dv")
            .filter(|d| condition(d, "Ready")["reason"] == "InvalidSpec")
    });
    let message = condition(&dv, "Ready")["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.contains("spec.storage.accessModes") && message.contains("StorageProfile mystery"),
        "{dv}"
    );
    assert!(up.get("pvc", "mystery-dv").is_none(), "no claim is made");
    up.ok(&["delete", "storageclass", "mystery"], None);
    eventually("the profile deleted with its class", 30, || {
        up.get("storageprofile", "mystery").is_none().then_some(())
    });
}

#[test]
fn a_node_pull_import_runs_the_users_scratch_image_and_a_bad_one_says_err_image_pull() {
    require_node!();
    let _node = node_slot();
    let node = DiskNode::start("cdi-node-pull", "disks/scratch");
    let (up, registry, reference) = (&node.up, &node.registry, &node.reference);
    up.ok(
        &["apply", "-f", "-"],
        Some(&node_pull_yaml("by-node", &format!("docker://{reference}"))),
    );
    let missing = format!("docker://{}/disks/no-such:v1", registry.address());
    up.ok(
        &["apply", "-f", "-"],
        Some(&node_pull_yaml("by-node-missing", &missing)),
    );

    let dv = up.dv_phase("by-node", "Succeeded");
    assert_eq!(dv["status"]["progress"], "100.00%", "{dv}");
    assert_eq!(condition(&dv, "Ready")["status"], "True", "{dv}");
    // The claim holds the image's raw content, then zeros up to its size.
    let volume = up.volume_path("by-node");
    let disk = std::fs::read(volume.join("disk.img")).expect("disk.img in the volume");
    let source = raw();
    assert!(disk.len() >= 8 << 20, "disk.img is {} bytes", disk.len());
    assert!(
        disk[..source.len()] == source[..],
        "the first 4 MiB are the image's"
    );
    assert!(
        disk[source.len()..].iter().all(|b| *b == 0),
        "the rest is zeros"
    );

    // The importer pod ran the user's image (the node pulled it) beside the importer.
    let pod = up
        .pod("importer-by-node")
        .expect("the retained importer pod");
    let containers = pod["spec"]["containers"].as_array().unwrap();
    let server = containers
        .iter()
        .find(|c| c["name"] == "server")
        .unwrap_or_else(|| panic!("a server container in {pod}"));
    assert_eq!(server["image"], reference.as_str(), "{pod}");
    assert_eq!(server["command"][0], "/shared/ld.so", "{pod}");
    let init = &pod["spec"]["initContainers"][0];
    assert_eq!(init["name"], "init", "{pod}");
    let importer = containers.iter().find(|c| c["name"] == "importer").unwrap();
    let env = importer["env"].as_array().unwrap();
    let var = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .map(|e| e["value"].clone())
    };
    assert_eq!(var("IMPORTER_SOURCE"), Some("http".into()), "{importer}");
    assert_eq!(
        var("IMPORTER_ENDPOINT"),
        Some("http://localhost:8100/disk.img".into())
    );
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod}");
    let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
    for c in statuses {
        assert_eq!(c["state"]["terminated"]["exitCode"], 0, "{pod}");
    }
    let server_status = statuses.iter().find(|c| c["name"] == "server").unwrap();
    assert!(
        server_status["imageID"]
            .as_str()
            .is_some_and(|i| !i.is_empty()),
        "{server_status}"
    );

    // The image that is not there: ErrImagePull (or the back-off after it) on the DataVolume,
    // the pod waiting for it, the controller carrying on.
    let failing = eventually("the pull failure on the DataVolume", 90, || {
        up.get("dv", "by-node-missing").filter(|d| {
            let reason = &condition(d, "Running")["reason"];
            reason == "ErrImagePull" || reason == "ImagePullBackOff"
        })
    });
    assert_eq!(failing["status"]["phase"], "ImportScheduled", "{failing}");
    let running = condition(&failing, "Running");
    assert_eq!(running["status"], "False", "{running}");
    let message = running["message"].as_str().unwrap_or("");
    assert!(message.contains("no-such"), "{running}");
    assert_eq!(condition(&failing, "Ready")["status"], "False", "{failing}");
    let pod = up
        .pod("importer-by-node-missing")
        .expect("its importer pod");
    let server = pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|s| s.iter().find(|c| c["name"] == "server").cloned())
        .unwrap_or_else(|| panic!("the server's status in {pod}"));
    assert!(server["state"]["waiting"].is_object(), "{pod}");
    up.ok(&["delete", "dv", "--all", "--wait=true"], None);
    eventually("the importer pods gone", 60, || {
        (up.pod("importer-by-node").is_none() && up.pod("importer-by-node-missing").is_none())
            .then_some(())
    });
}
