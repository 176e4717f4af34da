//! RBAC in `kubevirt-local up --no-node --no-kubelet` (KubeVirt's components, the subresource
//! API): `up` installs `kubevirt.io:view|edit|admin`, which aggregate into view/edit/admin; a
//! user with `edit` in one namespace starts its VM and reaches its VMI console path through the
//! subresource API, and is refused both in another namespace with upstream's 403.

mod common;

use common::plane::Plane;
use common::users::{as_user, can_i, stderr, user_kubeconfig};

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
    let gina = user_kubeconfig(&p.dir, "gina", &[], &[]);
    assert!(
        can_i(&gina, &["create", "virtualmachines", "-n", "team-a"]),
        "kubevirt.io:edit aggregates into edit"
    );
    assert!(!can_i(
        &gina,
        &["create", "virtualmachines", "-n", "team-b"]
    ));

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
