//! One probe attempt, as upstream's kubelet makes it: `exec` runs the command in the container
//! through the runtime (exit 0 passes), `httpGet` asks the pod over HTTP or HTTPS (a status from
//! 200 to 399 passes, [`super::http`]), `tcpSocket` connects, `grpc` asks the gRPC health
//! service ([`super::grpc`]). Failures carry upstream's wording, which `kubectl describe pod`
//! shows in the `Unhealthy` events.

use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

use super::grpc::grpc_probe;
use super::http::{Scheme, http_probe};
use crate::cri::Cri;

/// What an attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed.
    Success,
    /// It failed, and why.
    Failure(String),
}

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
        let scheme = match Scheme::parse(http.scheme.as_deref()) {
            Ok(scheme) => scheme,
            Err(e) => return Outcome::Failure(e),
        };
        let path = http.path.clone().filter(|p| !p.is_empty());
        let path = path.as_deref().unwrap_or("/");
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return http_probe(scheme, host, port, path, &headers, limit).await;
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
    if let Some(grpc) = &p.grpc {
        let Some(port) = u16::try_from(grpc.port).ok().filter(|p| *p > 0) else {
            return Outcome::Failure(format!("invalid port number: {}", grpc.port));
        };
        let service = grpc.service.clone().unwrap_or_default();
        return grpc_probe(pod_ip, port, &service, limit).await;
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

/// `host:port`, an IPv6 host in brackets.
pub(super) fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A TCP connection to `host:port` within `limit`; the error in Go's words.
pub(super) async fn connect(host: &str, port: u16, limit: Duration) -> Result<TcpStream, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

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

    #[tokio::test]
    async fn tcp_probes_pass_and_fail_as_upstreams() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { while listener.accept().await.is_ok() {} });
        let second = Duration::from_secs(1);
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
}
