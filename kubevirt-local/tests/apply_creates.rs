//! Server-side apply that creates an object admission reads other objects for, with the real
//! kubectl against a real `kubevirt-local apiserver`: those reads happen inside the apply's own
//! storage transaction. A VirtualMachineRestore (its target, snapshot and restores are read)
//! used to wait forever on the store's lock, hanging the server; a VMI is defaulted with the
//! KubeVirt CR's memoryOvercommit as a POST would be.

mod common;

use common::{Server, crds_file};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn server_side_apply_creates_read_inside_their_transaction() {
    let s = Server::start("apply-creates");
    s.ok(&["apply", "-f", crds_file(&s.dir).to_str().unwrap()]);
    let restore = "apiVersion: snapshot.kubevirt.io/v1beta1
kind: VirtualMachineRestore
metadata: {name: r1}
spec:
  target: {apiGroup: kubevirt.io, kind: VirtualMachine, name: vm1}
  virtualMachineSnapshotName: snap1
";
    let started = std::time::Instant::now();
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(restore));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the apply hung: {}",
        stderr(&out)
    );
    // Refused by the restore admitter (no such snapshot), in its words, not by a timeout.
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is invalid"), "{}", stderr(&out));
    s.ok(&["get", "namespaces"]);

    s.ok(&["create", "namespace", "kubevirt"]);
    let kv = "apiVersion: kubevirt.io/v1
kind: KubeVirt
metadata: {name: kubevirt, namespace: kubevirt}
spec:
  configuration:
    developerConfiguration: {memoryOvercommit: 150}
";
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(kv));
    assert!(out.status.success(), "{}", stderr(&out));
    let vmi = "apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: applied}
spec:
  domain:
    memory: {guest: 96Mi}
    devices: {}
";
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(vmi));
    assert!(out.status.success(), "{}", stderr(&out));
    let request = s.ok(&[
        "get",
        "vmi",
        "applied",
        "-o",
        "jsonpath={.spec.domain.resources.requests.memory}",
    ]);
    assert_eq!(request, "64Mi");
}
