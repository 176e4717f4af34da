//! Upstream CDI's own example DataVolumes (`../shared/fixtures/upstream/cdi-example-*.yaml`,
//! read from there, never copied) applied unchanged with kubectl to `kubevirt-local up`, only
//! their download URLs pointed at a web server of the test's: each becomes what upstream's CDI
//! makes of it, or says in its conditions why it cannot.

mod common;

use std::path::Path;
use std::process::Command;

use common::node::*;
use kubevirt_testsupport::{Profile, controller_binary, fixtures_dir, launcher_binary, tempdir};

const NODE: &str = "kv-cdi-examples";

/// The fixture `name`, with every `http(s)://...` URL replaced by `url`.
fn example(name: &str, url: &str) -> String {
    let text = std::fs::read_to_string(fixtures_dir().join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    text.lines()
        .map(|l| match l.find("url:") {
            Some(i) => format!("{}url: \"{url}\"", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `<dir>/disk.qcow2`, a 4 MiB disk with a marker at 1 MiB.
fn image(dir: &Path) {
    let raw = dir.join("disk.raw");
    let mut data = vec![0u8; 4 << 20];
    data[1 << 20..(1 << 20) + 14].copy_from_slice(b"example marker");
    std::fs::write(&raw, &data).unwrap();
    let qcow2 = dir.join("disk.qcow2");
    let ok = Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow2)
        .status()
        .unwrap()
        .success();
    assert!(ok, "qemu-img convert");
}

#[test]
fn upstreams_cdi_examples_do_what_upstream_does() {
    require_node!();
    let _node = node_slot();
    let launcher = launcher_binary(Profile::Debug);
    controller_binary(Profile::Debug);
    let dir = tempdir("cdi-examples");
    let data = dir.join("data");
    image(&dir);
    let url = format!(
        "http://{}:{}/disk.qcow2",
        host_ip(),
        serve_dir(dir.to_path_buf())
    );
    let (up, _) = start_up_node(&data, NODE, &["--launcher", launcher.to_str().unwrap()]);
    let apply = |name: &str| up.ok(&["apply", "-f", "-"], Some(&example(name, &url)));

    // http import, blank and upload with the default class; the Block import names `local`.
    apply("cdi-example-import-kubevirt-datavolume.yaml");
    apply("cdi-example-blank-image-datavolume.yaml");
    apply("cdi-example-upload-datavolume.yaml");
    apply("cdi-example-import-kubevirt-block-datavolume.yaml");
    for name in [
        "my-data-volume",
        "blank-image-datavolume",
        "import-kubevirt-block-datavolume",
    ] {
        let dv = up.dv_phase(name, "Succeeded");
        assert_eq!(condition(&dv, "Ready")["status"], "True", "{dv}");
        let pvc = up.get("pvc", name).expect("its claim");
        assert_eq!(pvc["spec"]["storageClassName"], "local", "{pvc}");
        assert_eq!(pvc["status"]["phase"], "Bound");
    }
    let block = up.get("pvc", "import-kubevirt-block-datavolume").unwrap();
    assert_eq!(block["spec"]["volumeMode"], "Block");
    up.dv_phase("upload-datavolume", "UploadReady");

    // Archive content into a Block volume: the importer refuses it, and the DataVolume says so.
    apply("cdi-example-import-archive-block-datavolume.yaml");
    let refused = eventually("the archive-to-Block refusal", 180, || {
        up.get("dv", "import-archive-block-datavolume").filter(|d| {
            condition(d, "Running")["message"]
                .as_str()
                .is_some_and(|m| m.contains("archive"))
        })
    });
    assert_ne!(refused["status"]["phase"], "Succeeded", "{refused}");

    // The clone example leaves `storage:` empty (null): upstream's webhook refuses a
    // DataVolume with neither pvc nor storage ("Missing Data volume PVC or Storage"), and so
    // does ours, naming the field; nothing is created.
    up.ok(&["create", "namespace", "source-ns"], None);
    let out = up.kubectl(
        &["apply", "-f", "-"],
        Some(&example("cdi-example-clone-datavolume.yaml", &url)),
    );
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("spec.storage"), "{said}");
    assert!(up.get("dv", "cloned-datavolume").is_none());

    // The VM example (kubevirt.io/v1alpha3, running: false, class `hdd` that does not exist):
    // its DataVolume is made and owned at once, its claim waits for a class, and the VM says
    // Provisioning (upstream ranks a DataVolume being populated above Stopped).
    apply("cdi-example-vm-dv.yaml");
    let dv = eventually("the VM's DataVolume", 60, || up.get("dv", "cirros-dv"));
    assert_eq!(
        dv["metadata"]["ownerReferences"][0]["name"],
        "vm-cirros-datavolume"
    );
    let vm = eventually("the VM Provisioning", 60, || {
        up.get("vm", "vm-cirros-datavolume")
            .filter(|v| v["status"]["printableStatus"] == "Provisioning")
    });
    assert_eq!(vm["status"]["ready"], false);
    let pvc = eventually("the VM's claim", 60, || up.get("pvc", "cirros-dv"));
    assert_eq!(pvc["spec"]["storageClassName"], "hdd");
    assert_eq!(pvc["status"]["phase"], "Pending");

    up.ok(&["delete", "vm", "--all", "--wait=true"], None);
    up.ok(&["delete", "dv", "--all", "--wait=true"], None);
    eventually("every volume deleted", 120, || {
        let pvs = up.ok(&["get", "pv", "-o", "name"], None);
        pvs.trim().is_empty().then_some(())
    });
    drop(up);
    assert_nothing_left(&data);
}
