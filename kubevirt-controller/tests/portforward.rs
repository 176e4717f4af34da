//! `virtctl port-forward` against `kubevirt-local up` (in process, with its node agent) running
//! the demo guest on real vCPUs with the pod network's masquerade binding: curl through the
//! forward gets the guest's HTTP answer (its cloud-init hostname and the path), and a forward to
//! a port nothing listens on fails with a clear error.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use kubevirt_testsupport::{Profile, demo_image, eventually, kubectl, tempdir};
use support::Plane;

#[allow(dead_code)] // the shared support module has more than this test uses
mod support;

const VIRTCTL: &str = env!("CARGO_BIN_EXE_virtctl");

/// The demo VM `web` on the pod network (masquerade), host name `web-vm`.
fn web_vm(image: &str) -> String {
    format!(
        r#"apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata: {{name: web}}
spec:
  runStrategy: Always
  template:
    spec:
      terminationGracePeriodSeconds: 5
      domain:
        memory: {{guest: 64Mi}}
        firmware:
          kernelBoot:
            container: {{image: "{image}", kernelPath: /boot/demo.elf}}
        devices:
          interfaces:
          - name: default
            masquerade: {{}}
          disks:
          - name: cloudinit
            disk: {{bus: virtio}}
      networks:
      - name: default
        pod: {{}}
      volumes:
      - name: cloudinit
        cloudInitNoCloud:
          userData: |
            #cloud-config
            hostname: web-vm
"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Forward(Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(port: u16, path: &str) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl")
}

#[test]
fn port_forward_reaches_the_guests_http_service_and_names_a_closed_port() {
    let dir = tempdir("portforward");
    let image = demo_image(&dir);
    let plane = Plane::start(&dir, Profile::Debug);
    let k = plane.kubeconfig();
    let applied = kubectl(k, &["apply", "-f", "-"], Some(&web_vm(&image)));
    assert!(applied.status.success(), "{applied:?}");
    eventually("the web VMI Running", || {
        let o = kubectl(
            k,
            &["get", "vmi/web", "-o", "jsonpath={.status.phase}"],
            None,
        );
        (String::from_utf8_lossy(&o.stdout) == "Running").then_some(())
    });

    let port = free_port();
    let mut child = Command::new(VIRTCTL)
        .env("KUBECONFIG", k)
        .args(["port-forward", "vm/web", &format!("{port}:80")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run virtctl port-forward");
    let mut stderr = child.stderr.take().unwrap();
    let forward = Forward(child);
    // The guest answers once DHCP gave it its address; until then curl sees the stream end.
    let body = eventually("curl through the forward gets the guest's answer", || {
        let o = curl(port, "/hello");
        let body = String::from_utf8_lossy(&o.stdout).into_owned();
        (o.status.success() && !body.is_empty()).then_some(body)
    });
    assert_eq!(body, "web-vm /hello\n");
    // A second connection through the same forward is a new stream.
    let again = curl(port, "/again");
    assert_eq!(String::from_utf8_lossy(&again.stdout), "web-vm /again\n");
    drop(forward);
    let mut said = String::new();
    stderr.read_to_string(&mut said).unwrap();
    assert!(
        said.contains(&format!("Forwarding from 127.0.0.1:{port} -> 80")),
        "{said}"
    );

    // Nothing listens on port 81: the guest's reset comes back as the error.
    let closed = Command::new(VIRTCTL)
        .env("KUBECONFIG", k)
        .args(["port-forward", "--stdio", "vm/web", "81"])
        .stdin(Stdio::null())
        .output()
        .expect("run virtctl port-forward --stdio");
    let err = String::from_utf8_lossy(&closed.stderr);
    assert!(!closed.status.success(), "{err}");
    assert!(
        err.contains("the guest refused a connection to port 81: nothing listens there"),
        "{err}"
    );
    // A VMI that does not exist is named.
    let missing = Command::new(VIRTCTL)
        .env("KUBECONFIG", k)
        .args(["port-forward", "--stdio", "vmi/nosuch", "80"])
        .stdin(Stdio::null())
        .output()
        .expect("run virtctl");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && err.contains("nosuch"), "{err}");

    // virtctl ssh runs the real OpenSSH client through `port-forward --stdio`. The demo guest
    // runs no SSH server: on port 22 the proxy's error is what the user sees, and pointed at
    // the HTTP port ssh gets through to the guest and reads its HTTP answer, not an SSH banner.
    let ssh = |port: &str| {
        let known = Path::new(&dir).join("known_hosts");
        let o = Command::new(VIRTCTL)
            .env("KUBECONFIG", k)
            .args(["ssh", "tester@vm/web", "-p", port, "--command", "hostname"])
            .args([
                "-t",
                "-o BatchMode=yes",
                "-t",
                "-o StrictHostKeyChecking=no",
            ])
            .arg("--known-hosts")
            .arg(&known)
            .stdin(Stdio::null())
            .output()
            .expect("run virtctl ssh");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = ssh("22");
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains("the guest refused a connection to port 22: nothing listens there"),
        "{err}"
    );
    let (code, err) = ssh("80");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("kex_exchange_identification"), "{err}");
}
