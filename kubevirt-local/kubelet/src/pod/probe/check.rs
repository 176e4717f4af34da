//! One probe attempt, as upstream's kubelet makes it: `exec` runs the command in the container
//! through the runtime (exit 0 passes), `httpGet` asks the pod (a status from 200 to 399 passes),
//! `tcpSocket` connects. Failures carry upstream's wording, which `kubectl describe pod` shows in
//! the `Unhealthy` events.

use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cri::Cri;

/// What an attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Success,
    /// It failed, and why.
    Failure(String),
}

/// The longest response head an HTTP probe reads.
const MAX_HEAD: usize = 16 * 1024;

/// The port `port` names on container `c`: a number, or the name of one of its ports.
pub fn port(c: &Container, port: &IntOrString) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => match name.parse::<i64>() {
            Ok(n) => n,
            Err(_) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| i64::from(p.container_port))
                .ok_or_else(|| format!("port {name:?} is not a port of container {:?}", c.name))?,
        },
    };
    u16::try_from(number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// The probe's timeout (`timeoutSeconds`, default 1).
pub fn timeout(p: &Probe) -> Duration {
    Duration::from_secs(p.timeout_seconds.filter(|t| *t > 0).unwrap_or(1) as u64)
}

/// Runs probe `p` of container `c` (runtime container `id`) once, against the pod at `pod_ip`.
pub async fn attempt(cri: &Cri, c: &Container, id: &str, p: &Probe, pod_ip: &str) -> Outcome {
    let limit = timeout(p);
    if let Some(exec) = &p.exec {
        return exec_probe(cri, id, exec.command.clone().unwrap_or_default(), limit).await;
    }
    if let Some(http) = &p.http_get {
        let port = match port(c, &http.port) {
            Ok(port) => port,
            Err(e) => return Outcome::Failure(e),
        };
        let host = http.host.clone().filter(|h| !h.is_empty());
        let host = host.as_deref().unwrap_or(pod_ip);
        let scheme = http.scheme.as_deref().unwrap_or("HTTP");
        if !scheme.eq_ignore_ascii_case("HTTP") {
            return Outcome::Failure(format!(
                "scheme {scheme} is not supported by this kubelet's HTTP probes (HTTP is)"
            ));
        }
        let path = http.path.clone().filter(|p| !p.is_empty());
        let path = path.as_deref().unwrap_or("/");
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return http_probe(host, port, path, &headers, limit).await;
    }
    if let Some(tcp) = &p.tcp_socket {
        let port = match port(c, &tcp.port) {
            Ok(port) => port,
            Err(e) => return Outcome::Failure(e),
        };
        let host = tcp.host.clone().filter(|h| !h.is_empty());
        let host = host.as_deref().unwrap_or(pod_ip);
        return tcp_probe(host, port, limit).await;
    }
    if p.grpc.is_some() {
        return Outcome::Failure("gRPC probes are not supported by this kubelet".into());
    }
    Outcome::Failure("the probe names no handler (exec, httpGet, tcpSocket or grpc)".into())
}

async fn exec_probe(cri: &Cri, id: &str, cmd: Vec<String>, limit: Duration) -> Outcome {
    let mut runtime = cri.runtime.clone();
    let call = runtime.exec_sync(cri::ExecSyncRequest {
        container_id: id.to_string(),
        cmd,
        timeout: limit.as_secs() as i64,
    });
    // The runtime enforces the timeout; this bounds a runtime that does not answer.
    match tokio::time::timeout(limit + Duration::from_secs(2), call).await {
        Err(_) => Outcome::Failure(format!("command timed out after {}s", limit.as_secs())),
        Ok(Err(status)) if status.message().contains("timeout") => {
            Outcome::Failure(format!("command timed out after {}s", limit.as_secs()))
        }
        Ok(Err(status)) => Outcome::Failure(status.message().to_string()),
        Ok(Ok(reply)) => {
            let reply = reply.into_inner();
            if reply.exit_code == 0 {
                Outcome::Success
            } else {
                let mut out = String::from_utf8_lossy(&reply.stdout).into_owned();
                out.push_str(&String::from_utf8_lossy(&reply.stderr));
                Outcome::Failure(out.trim_end().to_string())
            }
        }
    }
}

fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn connect(host: &str, port: u16, limit: Duration) -> Result<TcpStream, String> {
    let to = address(host, port);
    match tokio::time::timeout(limit, TcpStream::connect(&to)).await {
        Err(_) => Err(format!("dial tcp {to}: i/o timeout")),
        Ok(Err(e)) => Err(format!("dial tcp {to}: connect: {}", io_words(&e))),
        Ok(Ok(s)) => Ok(s),
    }
}

/// Go's spelling of common connect errors (`connection refused`).
fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

async fn tcp_probe(host: &str, port: u16, limit: Duration) -> Outcome {
    match connect(host, port, limit).await {
        Ok(_) => Outcome::Success,
        Err(e) => Outcome::Failure(e),
    }
}

/// The HTTP/1.1 request an HTTP probe sends (upstream's `User-Agent` and `Accept` unless the
/// probe sets them).
pub fn request(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> String {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {}\r\n", address(host, port)));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/1.32\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        // Header names and values from the spec cannot end the head early.
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            continue;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// The status code of an HTTP response head (`HTTP/1.1 200 OK`).
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..1000).contains(c))
}

async fn http_probe(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    limit: Duration,
) -> Outcome {
    let url = format!("http://{}{path}", address(host, port));
    let exchange = async {
        let mut s = connect(host, port, limit).await?;
        s.write_all(request(host, port, path, headers).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.contains(&b'\n') && head.len() < MAX_HEAD {
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        status_code(&head).ok_or_else(|| "malformed HTTP response".to_string())
    };
    match tokio::time::timeout(limit, exchange).await {
        Err(_) => Outcome::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Ok(Err(e)) => Outcome::Failure(format!("Get \"{url}\": {e}")),
        Ok(Ok(code)) if (200..400).contains(&code) => Outcome::Success,
        Ok(Ok(code)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;
    use proptest::prelude::*;

    #[test]
    fn named_ports_resolve_and_bad_ones_are_named() {
        let c = Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(port(&c, &IntOrString::String("http".into())), Ok(8080));
        assert_eq!(port(&c, &IntOrString::String("81".into())), Ok(81));
        assert_eq!(port(&c, &IntOrString::Int(80)), Ok(80));
        assert!(
            port(&c, &IntOrString::String("grpc".into()))
                .unwrap_err()
                .contains("\"grpc\"")
        );
        assert!(port(&c, &IntOrString::Int(70000)).is_err());
        assert!(port(&c, &IntOrString::Int(0)).is_err());
    }

    #[test]
    fn the_request_carries_upstreams_defaults_unless_the_probe_sets_them() {
        let r = request("10.0.0.5", 80, "/healthz", &[]);
        assert!(
            r.starts_with("GET /healthz HTTP/1.1\r\nHost: 10.0.0.5:80\r\n"),
            "{r}"
        );
        assert!(r.contains("User-Agent: kube-probe/1.32\r\n"));
        let r = request("::1", 80, "/", &[("Host".into(), "example".into())]);
        assert!(
            r.contains("Host: example\r\n") && !r.contains("[::1]"),
            "{r}"
        );
        let r = request("h", 1, "/", &[("X-Evil".into(), "a\r\nInjected: 1".into())]);
        assert!(!r.contains("Injected"), "{r}");
    }

    #[tokio::test]
    async fn http_and_tcp_probes_pass_and_fail_as_upstreams() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply: &[u8] = if n == 0 {
                    b"HTTP/1.1 204 No Content\r\n\r\n"
                } else {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
                };
                n += 1;
                let _ = s.write_all(reply).await;
            }
        });
        let second = Duration::from_secs(1);
        assert_eq!(
            http_probe("127.0.0.1", port, "/", &[], second).await,
            Outcome::Success
        );
        assert_eq!(
            http_probe("127.0.0.1", port, "/", &[], second).await,
            Outcome::Failure("HTTP probe failed with statuscode: 503".into())
        );
        assert_eq!(tcp_probe("127.0.0.1", port, second).await, Outcome::Success);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let Outcome::Failure(why) = tcp_probe("127.0.0.1", closed, second).await else {
            panic!("a closed port passed");
        };
        assert_eq!(
            why,
            format!("dial tcp 127.0.0.1:{closed}: connect: connection refused")
        );
    }

    proptest! {
        /// Whatever a container answers, the status line parser never panics and only takes
        /// three-digit codes.
        #[test]
        fn any_response_head_parses_safely(head in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(code) = status_code(&head) {
                prop_assert!((100..1000).contains(&code));
            }
        }
    }
}
