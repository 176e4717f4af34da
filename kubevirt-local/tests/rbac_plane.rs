//! RBAC in `kubevirt-local up --no-node --no-kubelet` (KubeVirt's components, the subresource
//! API): `up` installs `kubevirt.io:view|edit|admin`, which aggregate into view/edit/admin; a
//! user with `edit` in one namespace starts its VM and reaches its VMI console path through the
//! subresource API, and is refused both in another namespace with upstream's 403.

mod common;

use common::plane::Plane;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn user_kubeconfig(dir: &Path, user: &str) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .args(["kubeconfig", "--data-dir"])
        .arg(dir)
        .args(["--user", user])
        .output()
        .expect("run kubevirt-local kubeconfig");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(format!("{user}.kubeconfig"));
    std::fs::write(&path, &out.stdout).expect("write kubeconfig");
    path
}

fn as_user(kubeconfig: &Path, args: &[&str]) -> Output {
    let args: Vec<&str> = ["--request-timeout=20s"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    kubevirt_testsupport::kubectl(kubeconfig, &args, None)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn kubevirt_roles_and_the_subresource_api_are_authorised_per_namespace() {
    let p = Plane::start("rbac-plane");
    for role in ["kubevirt.io:view", "kubevirt.io:edit", "kubevirt.io:admin"] {
        p.ok(&["get", "clusterrole", role]);
    }
    let vm = kubevirt_testsupport::fixture("kubevirt-examples-vm-cirros.yaml");
    for ns in ["team-a", "team-b"] {
        p.ok(&["create", "namespace", ns]);
        p.ok(&["-n", ns, "apply", "-f", vm.to_str().unwrap()]);
    }
    p.ok(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        "gina-edit",
        "--clusterrole=edit",
        "--user=gina",
    ]);
    let gina = user_kubeconfig(&p.dir, "gina");
    let can_i = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&as_user(&gina, &all).stdout).trim() == "yes"
    };
    assert!(
        can_i(&["create", "virtualmachines", "-n", "team-a"]),
        "kubevirt.io:edit aggregates into edit"
    );
    assert!(!can_i(&["create", "virtualmachines", "-n", "team-b"]));

    let body = p.dir.join("empty.json");
    std::fs::write(&body, "{}").expect("body");
    let start = |ns: &str| {
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/vm-cirros/start"
        );
        as_user(
            &gina,
            &["replace", "--raw", &path, "-f", body.to_str().unwrap()],
        )
    };
    let out = start("team-b");
    assert!(
        stderr(&out).contains(r#"virtualmachines.subresources.kubevirt.io "vm-cirros" is forbidden: User "gina" cannot update resource "virtualmachines/start" in API group "subresources.kubevirt.io" in the namespace "team-b""#),
        "{}",
        stderr(&out)
    );
    let out = start("team-a");
    assert!(out.status.success(), "{}", stderr(&out));
    let strategy = p.ok(&[
        "-n",
        "team-a",
        "get",
        "vm",
        "vm-cirros",
        "-o",
        "jsonpath={.spec.runStrategy}",
    ]);
    assert_eq!(strategy.trim(), "Always", "the start reached the VM");

    let console = |ns: &str| {
        let path = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/vm-cirros/console"
        );
        as_user(&gina, &["get", "--raw", &path])
    };
    let out = console("team-b");
    assert!(
        stderr(&out).contains(r#"User "gina" cannot get resource "virtualmachineinstances/console" in API group "subresources.kubevirt.io" in the namespace "team-b""#),
        "{}",
        stderr(&out)
    );
    // In her namespace the request reaches the subresource API (which wants a websocket, and
    // the VMI has no node to run on): anything but a 403.
    let out = console("team-a");
    assert!(!stderr(&out).contains("Forbidden"), "{}", stderr(&out));
}
