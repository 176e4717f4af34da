//! `kubevirt-controller manifests` (issue 18): the two install files are written, the real
//! kubectl accepts them with `--dry-run=server` against our API server and then for real (the
//! namespace, the operator's RBAC and Deployment exist, the KubeVirt CR is stored); bad options
//! are named and nothing is written.

#[allow(unused_imports)] // the shared module re-exports more than this test uses
mod common;

use std::process::Command;

use common::Cluster;

fn manifests(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .arg("manifests")
        .args(args)
        .output()
        .expect("running kubevirt-controller manifests")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_install_manifests_are_accepted_by_the_api_server() {
    let cluster = Cluster::start(true).await;
    let out = cluster.dir.join("release");
    let o = manifests(&[
        "--registry",
        "127.0.0.1:5000",
        "--tag",
        "v0.1.0",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let operator = out.join("kubevirt-operator.yaml");
    let cr = out.join("kubevirt-cr.yaml");
    let text = std::fs::read_to_string(&operator).unwrap();
    assert!(
        text.contains("image: 127.0.0.1:5000/virt-operator:v0.1.0"),
        "{text}"
    );

    // The test server already serves every CRD, so the operator file is applied (as
    // `kubectl create -f` would create it on a fresh cluster). A server-side dry run needs the
    // namespace to exist already (as upstream's API server does: nothing of a dry run is kept).
    let (ok, _, stderr) = cluster
        .kubectl(&["create", "namespace", "kubevirt"], None)
        .await;
    assert!(ok, "{stderr}");
    let (ok, stdout, stderr) = cluster
        .kubectl(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-f",
                operator.to_str().unwrap(),
            ],
            None,
        )
        .await;
    assert!(ok, "dry run: {stdout}{stderr}");
    let (ok, _, stderr) = cluster
        .kubectl(
            &["get", "deployment", "-n", "kubevirt", "virt-operator"],
            None,
        )
        .await;
    assert!(
        !ok && stderr.contains("NotFound"),
        "a dry run stores nothing: {stderr}"
    );

    let (ok, stdout, stderr) = cluster
        .kubectl(
            &["apply", "--server-side", "-f", operator.to_str().unwrap()],
            None,
        )
        .await;
    assert!(ok, "{stdout}{stderr}");
    for (kind, ns) in [
        ("namespace/kubevirt", None),
        ("priorityclass/kubevirt-cluster-critical", None),
        ("clusterrole/kubevirt-operator", None),
        ("clusterrolebinding/kubevirt-operator", None),
        ("serviceaccount/kubevirt-operator", Some("kubevirt")),
        ("role/kubevirt-operator", Some("kubevirt")),
        ("rolebinding/kubevirt-operator", Some("kubevirt")),
        ("deployment/virt-operator", Some("kubevirt")),
    ] {
        let mut args = vec!["get", kind];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let (ok, _, stderr) = cluster.kubectl(&args, None).await;
        assert!(ok, "{kind}: {stderr}");
    }

    let (ok, stdout, stderr) = cluster
        .kubectl(
            &["create", "--dry-run=server", "-f", cr.to_str().unwrap()],
            None,
        )
        .await;
    assert!(ok, "{stdout}{stderr}");
    let (ok, stdout, stderr) = cluster
        .kubectl(&["create", "-f", cr.to_str().unwrap()], None)
        .await;
    assert!(ok, "{stdout}{stderr}");
    let (ok, stdout, stderr) = cluster
        .kubectl(
            &["get", "kv", "-n", "kubevirt", "kubevirt", "-o", "name"],
            None,
        )
        .await;
    assert!(
        ok && stdout.trim() == "kubevirt.kubevirt.io/kubevirt",
        "{stdout}{stderr}"
    );
}

#[test]
fn bad_options_are_named_and_nothing_is_written() {
    let dir = kubevirt_testsupport::tempdir("manifests-bad");
    let out = dir.join("release");
    let o = manifests(&[
        "--registry",
        "127.0.0.1:5000",
        "--tag",
        "v1:0",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--tag \"v1:0\""), "{err}");
    assert!(!out.exists());
}
