//! `virtctl port-forward` against `kubevirt-local up` (in process, with its node agent) running
//! the demo guest on real vCPUs with the pod network's masquerade binding: curl through the
//! forward gets the guest's HTTP answer (its cloud-init hostname and the path), and a forward to
//! a port nothing listens on fails with a clear error. `virtctl ssh` runs the real OpenSSH client
//! through `port-forward --stdio` to the guest's SSH server: the key cloud-init authorises runs
//! `--command hostname`, another key is refused; `virtctl scp` copies a file in and back.
//! `virtctl port-forward vm/web udp/L:7` carries datagrams to the guest's UDP echo service.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use kubevirt_testsupport::{Profile, demo_image, eventually, free_port, kubectl, tempdir};
use support::Plane;

#[allow(dead_code)] // the shared support module has more than this test uses
mod support;

const VIRTCTL: &str = env!("CARGO_BIN_EXE_virtctl");

/// The demo VM `web` on the pod network (masquerade), host name `web-vm`, accepting SSH logins
/// with `public_key`.
fn web_vm(image: &str, public_key: &str) -> String {
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
            ssh_authorized_keys:
              - {public_key}
"#
    )
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
    let (key, wrong) = (dir.join("id"), dir.join("wrong"));
    let public_key = keygen(&key);
    keygen(&wrong);
    let plane = Plane::start(&dir, Profile::Debug);
    let k = plane.kubeconfig();
    let applied = kubectl(k, &["apply", "-f", "-"], Some(&web_vm(&image, &public_key)));
    assert!(applied.status.success(), "{applied:?}");
    eventually("the web VMI Running", || {
        let o = kubectl(
            k,
            &["get", "vmi/web", "-o", "jsonpath={.status.phase}"],
            None,
        );
        (String::from_utf8_lossy(&o.stdout) == "Running").then_some(())
    });

    let port = free_port().expect("a free port on the loopback");
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

    // virtctl ssh runs the real OpenSSH client through `port-forward --stdio` (upstream's
    // flags: -i, --command, -t/--local-ssh-opts, --known-hosts).
    let known = Path::new(&dir).join("known_hosts");
    let ssh = |key: &Path, port: &str, command: &str| {
        let t0 = Instant::now();
        let o = Command::new(VIRTCTL)
            .env("KUBECONFIG", k)
            .args(["ssh", "tester@vm/web", "-p", port, "--command", command])
            .arg("-i")
            .arg(key)
            .args([
                "-t",
                "-o BatchMode=yes",
                "-t",
                "-o StrictHostKeyChecking=no",
                "-t",
                "-o IdentitiesOnly=yes",
            ])
            .arg("--known-hosts")
            .arg(&known)
            .stdin(Stdio::null())
            .output()
            .expect("run virtctl ssh");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
            t0.elapsed(),
        )
    };
    let (code, out, err, took) = ssh(&key, "22", "hostname");
    assert_eq!((code, out.as_str()), (Some(0), "web-vm\n"), "{err}");
    eprintln!("virtctl ssh --command hostname: {took:?}");
    let (code, out, err, _) = ssh(&key, "22", "uname");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("kubevirt-rs-demo web-vm "), "{out}");
    // The guest's host key went to the known hosts file virtctl named.
    let hosts = std::fs::read_to_string(&known).unwrap_or_default();
    assert!(hosts.contains("ssh-ed25519"), "{hosts}");
    // Another key is refused: ssh's own exit status, non-zero.
    let (code, out, err, _) = ssh(&wrong, "22", "hostname");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    assert!(out.is_empty(), "{out}");
    // virtctl scp (the real scp, legacy protocol) copies a file into the guest's RAM store and
    // back, byte for byte.
    let data: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (local, back) = (dir.join("data.bin"), dir.join("back.bin"));
    std::fs::write(&local, &data).unwrap();
    let scp = |src: &str, dst: &str| {
        let t0 = Instant::now();
        let o = Command::new(VIRTCTL)
            .env("KUBECONFIG", k)
            .args(["scp", "-i"])
            .arg(&key)
            .args([
                "-t",
                "-o BatchMode=yes",
                "-t",
                "-o StrictHostKeyChecking=no",
            ])
            .arg("--known-hosts")
            .arg(&known)
            .args([src, dst])
            .stdin(Stdio::null())
            .output()
            .expect("run virtctl scp");
        assert!(o.status.success(), "virtctl scp {src} {dst}: {o:?}");
        t0.elapsed()
    };
    let up = scp(local.to_str().unwrap(), "tester@vm/web:data.bin");
    let down = scp("tester@vm/web:data.bin", back.to_str().unwrap());
    eprintln!("virtctl scp of 100,000 bytes: to the guest {up:?}, back {down:?}");
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the copy came back changed"
    );
    let (code, out, err, _) = ssh(&key, "22", "ls");
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "100000 data.bin\n"),
        "{err}"
    );

    // virtctl port-forward udp/LOCAL:7: datagrams reach the guest's UDP echo service and come
    // back whole, one for one.
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(VIRTCTL)
        .env("KUBECONFIG", k)
        .args(["port-forward", "vm/web", &format!("udp/{udp_port}:7")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run virtctl port-forward udp");
    let udp_forward = Forward(child);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let first = eventually("a datagram comes back through the UDP forward", || {
        client.send_to(b"ping", ("127.0.0.1", udp_port)).ok()?;
        let n = client.recv(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    });
    assert_eq!(first, b"ping");
    let t0 = Instant::now();
    for size in [1, 512, 1400] {
        let d: Vec<u8> = (0..size).map(|i| (i * 31 + size) as u8).collect();
        client.send_to(&d, ("127.0.0.1", udp_port)).unwrap();
        let n = client.recv(&mut buf).expect("the echo");
        assert_eq!(&buf[..n], &d[..], "a {size}-byte datagram");
    }
    eprintln!("virtctl port-forward udp: 3 echoes in {:?}", t0.elapsed());
    drop(udp_forward);

    // Nothing listens on 2222: the proxy's error is what the user sees; pointed at the HTTP
    // port ssh gets through to the guest and reads its HTTP answer, not an SSH banner.
    let (code, _, err, _) = ssh(&key, "2222", "hostname");
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains("the guest refused a connection to port 2222: nothing listens there"),
        "{err}"
    );
    let (code, _, err, _) = ssh(&key, "80", "hostname");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("kex_exchange_identification"), "{err}");
}

fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "virtctl-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client, installed by scripts/setup.sh)");
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}
