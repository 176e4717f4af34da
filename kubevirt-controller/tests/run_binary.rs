//! `kubevirt-controller run --kubeconfig FILE` against an API server over HTTPS with a bearer
//! token, driven by the real kubectl: a VM applied with `kubectl apply` gets its instance, and
//! SIGTERM stops the controller cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Cluster, eventually};

const VM: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: demo
spec:
  runStrategy: Always
  template:
    spec:
      domain:
        devices: {}
        memory:
          guest: 64Mi
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_the_vm_controller_until_sigterm() {
    let c = Cluster::start(true).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .arg("run")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kubevirt-controller");
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("https://127.0.0.1:"), "{first}");

    let (ok, _, err) = c.kubectl(&["apply", "-f", "-"], Some(VM)).await;
    assert!(ok, "kubectl apply: {err}");
    eventually("the instance", || async {
        let (ok, out, _) = c.kubectl(&["get", "vmi", "demo", "-o", "name"], None).await;
        (ok && out.trim() == "virtualmachineinstance.kubevirt.io/demo").then_some(())
    })
    .await;
    eventually("Starting in kubectl get vm", || async {
        let (_, out, _) = c
            .kubectl(&["get", "vm", "demo", "--no-headers"], None)
            .await;
        out.split_whitespace()
            .any(|w| w == "Starting")
            .then_some(())
    })
    .await;

    // SAFETY: kill(2) on the child this test spawned and has not reaped; no memory is involved.
    let r = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(r, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}
