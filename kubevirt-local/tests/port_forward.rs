//! `kubectl port-forward` into pods on the local node: the real kubectl 1.32 against
//! `kubevirt-local up` (API server + kubelet + its containerd), whose runtime serves the
//! forwarded connections. kubectl speaks SPDY tunnelled in a websocket by default and plain
//! SPDY with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`; both are exercised, and the older
//! websocket channel protocol (kube-rs's) through `kubectl proxy`. Needs root and the
//! node packages; skips (saying why) without them.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::node::*;
use kubevirt_testsupport::tempdir;

/// A pod serving `hello-8080` on 8080 and `hello-8081` on 8081 (busybox httpd), labelled
/// `app: web`, with a Service `web` mapping port 80 to 8080.
fn web(up: &Up, image: &str) {
    let script = "mkdir -p /a /b && echo hello-8080 > /a/index.html && echo hello-8081 > /b/index.html \
                  && httpd -p 8081 -h /b && exec httpd -f -p 8080 -h /a";
    let pod = pod_yaml("web", image, script, "")
        .replace("  name: web\n", "  name: web\n  labels: {app: web}\n")
        .replace(
            "    command:",
            "    ports: [{name: http, containerPort: 8080}, {containerPort: 8081}]\n    command:",
        );
    up.run_pod(&pod);
    up.ok(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  \
             ports: [{port: 80, targetPort: 8080}]\n",
        ),
    );
    running_pod(up, "web");
}

/// A `kubectl port-forward` running in the background; killed on drop.
struct Forward {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Forward {
    fn start(up: &Up, args: &[&str], env: &[(&str, &str)]) -> Self {
        let kubeconfig = up.kubeconfig();
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &kubeconfig)
            .envs(env.iter().copied())
            .arg("--cache-dir")
            .arg(kubeconfig.with_file_name("kubectl-cache"))
            .args(["port-forward", "--address", "127.0.0.1"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Forward {
            child,
            lines,
            stderr,
        }
    }

    /// The local ports of the next `n` "Forwarding from 127.0.0.1:LOCAL -> REMOTE" lines.
    fn local_ports(&mut self, n: usize) -> Vec<u16> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut ports = Vec::new();
        while ports.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "kubectl port-forward did not start; stderr:\n{}",
                    self.stderr()
                )
            });
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                ports.push(rest.split(' ').next().unwrap().parse().unwrap());
            }
        }
        ports
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The stderr once it has `line` (its reader thread may lag the stdout lines), or a panic
    /// showing it after 10 s.
    fn stderr_with(&self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            if log.contains(line) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {line:?} in kubectl's stderr:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `secs` for kubectl to exit; its stderr then.
    fn exits_within(&mut self, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(!status.success(), "kubectl port-forward ended well?");
                // The stderr reader finishes with the process.
                std::thread::sleep(Duration::from_millis(200));
                return self.stderr();
            }
            assert!(
                Instant::now() < deadline,
                "kubectl port-forward still runs after {secs} s; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /` through local port `port`.
fn fetch(port: u16) -> String {
    http_get("127.0.0.1", port, "/")
        .unwrap_or_else(|| panic!("no 200 through 127.0.0.1:{port}"))
        .trim()
        .to_string()
}

/// `kubectl proxy` on a free loopback port (plain HTTP, kubectl's credentials); it and its port.
fn proxy(up: &Up) -> (Child, u16) {
    let kubeconfig = up.kubeconfig();
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .args(["proxy", "--port=0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl proxy");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("kubectl proxy said {line:?}"));
    (child, port)
}

/// `GET /` to pod `pod`'s port `port` over the older websocket protocol (as kube-rs speaks it:
/// `v4.channel.k8s.io`, `?ports=`, channel 0 data, 1 errors, each first naming its port),
/// through `kubectl proxy` on `proxy_port`; the data and error channels' bytes.
fn channel_fetch(proxy_port: u16, pod: &str, port: u16) -> (String, String) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", proxy_port))
            .await
            .unwrap();
        let mut req = format!(
            "ws://127.0.0.1:{proxy_port}/api/v1/namespaces/default/pods/{pod}/portforward?ports={port}"
        )
        .into_client_request()
        .unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v5.channel.k8s.io, v4.channel.k8s.io".parse().unwrap(),
        );
        let (mut ws, answer) = tokio_tungstenite::client_async(req, tcp)
            .await
            .expect("the websocket upgrade");
        assert_eq!(answer.headers()["sec-websocket-protocol"], "v4.channel.k8s.io");
        let ask = [&[0u8][..], b"GET / HTTP/1.0\r\n\r\n"].concat();
        ws.send(Message::Binary(ask.into())).await.unwrap();
        let (mut data, mut errors, mut named) = (Vec::new(), Vec::new(), 0);
        let read = async {
            while let Some(Ok(m)) = ws.next().await {
                let Message::Binary(b) = m else { continue };
                let Some((&channel, rest)) = b.split_first() else {
                    continue;
                };
                if named < 2 && rest == port.to_le_bytes() {
                    named += 1;
                    continue;
                }
                match channel {
                    0 => data.extend_from_slice(rest),
                    _ => errors.extend_from_slice(rest),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(20), read).await;
        assert_eq!(named, 2, "each channel names its port first");
        (
            String::from_utf8_lossy(&data).into_owned(),
            String::from_utf8_lossy(&errors).into_owned(),
        )
    })
}

#[test]
fn kubectl_port_forward_over_websockets_reaches_pods_and_services() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let dir = tempdir("portforward-ws");
    let up = start_up(&dir, "kv-portforward-ws", &im);
    web(&up, &im.busybox);

    // Two ports at once, two connections on the first.
    let mut both = Forward::start(&up, &["pod/web", "0:8080", "0:8081", "-v=6"], &[]);
    let ports = both.local_ports(2);
    // Upgraded as a websocket (a GET), not through the SPDY fallback (a POST).
    let log = both.stderr_with("/pods/web/portforward 101 Switching Protocols");
    assert!(log.contains("GET https://"), "{log}");
    assert!(!log.contains("POST https://"), "{log}");
    assert_eq!(fetch(ports[0]), "hello-8080");
    assert_eq!(fetch(ports[0]), "hello-8080");
    assert_eq!(fetch(ports[1]), "hello-8081");

    // A Service: kubectl picks its pod and maps port 80 to the target port 8080.
    let mut svc = Forward::start(&up, &["svc/web", "0:80"], &[]);
    let port = svc.local_ports(1)[0];
    assert_eq!(fetch(port), "hello-8080");
    drop(svc);

    // Nobody listens on 9999: the connection is closed, kubectl prints the runtime's error for
    // it and (kubectl ≥ 1.23 ends a forward whose stream reported an error) exits.
    let mut nobody = Forward::start(&up, &["pod/web", "0:9999"], &[]);
    let port = nobody.local_ports(1)[0];
    assert_eq!(http_get("127.0.0.1", port, "/"), None);
    let err = nobody.exits_within(30);
    assert!(
        err.contains("an error occurred forwarding") && err.contains("9999"),
        "{err}"
    );
    assert!(err.contains("connection refused"), "{err}");
    // The other session is untouched.
    assert_eq!(fetch(ports[1]), "hello-8081");

    // Without an upgrade the endpoint says what it wants; a missing pod is a 404.
    let raw = up.kubectl(
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/web/portforward",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&raw.stderr);
    assert!(text.contains("Upgrade request required"), "{text}");
    let raw = up.kubectl(
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/gone/portforward",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&raw.stderr);
    assert!(
        text.contains("(NotFound)") && text.contains("pods \"gone\" not found"),
        "{text}"
    );

    // The pod goes: the forward ends with it.
    up.ok(&["delete", "pod", "web", "--wait=false"], None);
    let err = both.exits_within(60);
    assert!(err.contains("lost connection to pod"), "{err}");
    up.ok(&["delete", "svc", "web"], None);
    assert_nothing_left(&dir);
}

#[test]
fn kubectl_port_forward_over_spdy_and_a_pod_not_running() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let dir = tempdir("portforward-spdy");
    let up = start_up(&dir, "kv-portforward-spdy", &im);
    web(&up, &im.busybox);

    let spdy = [("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")];
    let mut fwd = Forward::start(&up, &["web", "0:8080", "0:8081", "-v=6"], &spdy);
    let ports = fwd.local_ports(2);
    let log = fwd.stderr_with("/pods/web/portforward 101 Switching Protocols");
    assert!(log.contains("POST https://"), "{log}");
    assert_eq!(fetch(ports[0]), "hello-8080");
    assert_eq!(fetch(ports[1]), "hello-8081");
    assert_eq!(fetch(ports[0]), "hello-8080");

    // The older websocket protocol (kube-rs's), through kubectl proxy: the page, and for a
    // port nobody listens on, the runtime's error on the error channel.
    let (mut proxy_child, proxy_port) = proxy(&up);
    let (data, errors) = channel_fetch(proxy_port, "web", 8081);
    assert!(data.ends_with("hello-8081\n"), "{data:?} {errors:?}");
    let (data, errors) = channel_fetch(proxy_port, "web", 9999);
    assert!(
        data.is_empty() && errors.contains("connection refused"),
        "{data:?} {errors:?}"
    );
    let _ = proxy_child.kill();
    let _ = proxy_child.wait();

    // A pod bound to the node whose image does not exist stays Pending: a clear 400.
    let missing = format!("{}/test/does-not-exist:1", im.registry.address());
    up.run_pod(&pod_yaml("stuck", &missing, "true", ""));
    let raw = up.kubectl(
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/stuck/portforward",
        ],
        None,
    );
    let text = String::from_utf8_lossy(&raw.stderr);
    assert!(
        text.contains("(BadRequest)") && text.contains("pod stuck is not running (phase Pending)"),
        "{text}"
    );
    // kubectl checks the phase itself first.
    let out = up.kubectl(&["port-forward", "stuck", "0:80"], None);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("unable to forward port because pod is not running"),
        "{text}"
    );

    up.ok(&["delete", "pod", "web", "--wait=false"], None);
    let err = fwd.exits_within(60);
    assert!(err.contains("lost connection to pod"), "{err}");
    up.ok(
        &["delete", "pod", "stuck", "--wait=true", "--timeout=60s"],
        None,
    );
    assert_nothing_left(&dir);
}
