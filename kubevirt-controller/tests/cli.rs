//! The `kubevirt-controller` binary's offline commands, run as a user runs them.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubevirt-controller");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

fn fixtures() -> std::path::PathBuf {
    kubevirt_testsupport::fixtures_dir()
}

#[test]
fn crds_prints_every_crd_as_yaml() {
    let out = run(&["crds"], None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let docs = kubevirt_api::codec::documents_from_yaml(&text).expect("valid YAML");
    assert_eq!(docs.len(), kubevirt_api::object::KINDS.len());
    for d in &docs {
        assert_eq!(d.value["kind"], "CustomResourceDefinition");
        // Fits the last-applied-configuration annotation of a client-side `kubectl apply`.
        assert!(
            serde_json::to_string(&d.value).unwrap().len() < 256 * 1024,
            "{}",
            d.value["metadata"]["name"]
        );
    }
    let names: Vec<_> = docs
        .iter()
        .map(|d| d.value["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"virtualmachines.kubevirt.io".to_string()));
    assert!(names.contains(&"datavolumes.cdi.kubevirt.io".to_string()));
}

#[test]
fn validate_accepts_upstream_examples_and_round_trips_them() {
    let f = fixtures().join("kubevirt-examples-vm-cirros.yaml");
    let out = run(&["validate", "-f", f.to_str().unwrap(), "-o", "yaml"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("kind: VirtualMachine"));
    assert!(text.contains("type: q35"), "defaults applied");
}

#[test]
fn validate_reports_paths_and_exits_1() {
    let doc = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: bad}\nspec:\n  running: true\n  runStrategy: Always\n  template:\n    spec:\n      domain:\n        devices:\n          disks: [{name: root, disk: {bus: virtio}}]\n          bogus: 1\n";
    let out = run(&["validate", "-f", "-"], Some(doc));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("spec.template.spec.domain.devices.bogus: unknown field"),
        "{text}"
    );
    let fixed = doc.replace("          bogus: 1\n", "");
    let out = run(&["validate", "-f", "-"], Some(&fixed));
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "-[0] VirtualMachine/bad: spec.running: running and runStrategy are mutually exclusive"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "spec.template.spec.domain.devices.disks[0].name: disk \"root\" has no volume"
        ),
        "{text}"
    );
}
