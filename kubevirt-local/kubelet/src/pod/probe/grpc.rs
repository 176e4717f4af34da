//! `grpc` probes, as upstream's kubelet makes them: a plaintext HTTP/2 connection to the pod's
//! IP and the probe's port, one `grpc.health.v1.Health/Check` with the probe's `service` (empty
//! by default); the answer `SERVING` passes. Failures carry upstream's wording.

use std::time::Duration;

use tonic::Code;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::check::{Outcome, address};

/// One `grpc` attempt: service `service` of the server at `host:port`, within `limit`.
pub async fn grpc_probe(host: &str, port: u16, service: &str, limit: Duration) -> Outcome {
    let addr = address(host, port);
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e.connect_timeout(limit).timeout(limit),
        Err(e) => return Outcome::Failure(format!("error: invalid address {addr:?}: {e}")),
    };
    let seconds = limit.as_secs();
    let channel = match tokio::time::timeout(limit, endpoint.connect()).await {
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {seconds}s"
            ));
        }
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at {addr:?}: {}",
                source_chain(&e)
            ));
        }
        Ok(Ok(c)) => c,
    };
    let mut client = HealthClient::new(channel);
    let call = client.check(HealthCheckRequest {
        service: service.to_string(),
    });
    let reply = match tokio::time::timeout(limit, call).await {
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: health rpc did not complete within {seconds}s"
            ));
        }
        Ok(Err(status)) => {
            return Outcome::Failure(match status.code() {
                Code::Unimplemented => format!(
                    "error: this server does not implement the grpc health protocol \
                     (grpc.health.v1.Health): {}",
                    status.message()
                ),
                Code::DeadlineExceeded | Code::Cancelled => {
                    format!("timeout: health rpc did not complete within {seconds}s")
                }
                _ => format!(
                    "error: health rpc probe failed: rpc error: code = {:?} desc = {}",
                    status.code(),
                    status.message()
                ),
            });
        }
        Ok(Ok(reply)) => reply.into_inner(),
    };
    match ServingStatus::try_from(reply.status) {
        Ok(ServingStatus::Serving) => Outcome::Success,
        Ok(other) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            other.as_str_name()
        )),
        Err(_) => Outcome::Failure(format!(
            "service unhealthy (responded with \"{}\")",
            reply.status
        )),
    }
}

/// An error and its sources, `: `-separated (tonic's transport error says little on its own).
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        text.push_str(": ");
        text.push_str(&s.to_string());
        next = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gRPC health server on 127.0.0.1 where `""` is SERVING and `"db"` NOT_SERVING.
    async fn health_server() -> u16 {
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("db", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _keep = reporter;
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        port
    }

    #[tokio::test]
    async fn grpc_probes_pass_and_fail_as_upstreams() {
        let second = Duration::from_secs(1);
        let port = health_server().await;
        assert_eq!(
            grpc_probe("127.0.0.1", port, "", second).await,
            Outcome::Success
        );
        assert_eq!(
            grpc_probe("127.0.0.1", port, "db", second).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let Outcome::Failure(why) = grpc_probe("127.0.0.1", port, "nope", second).await else {
            panic!("an unknown service passed");
        };
        assert!(
            why.starts_with("error: health rpc probe failed: rpc error: code = NotFound"),
            "{why}"
        );

        // A closed port.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let Outcome::Failure(why) = grpc_probe("127.0.0.1", closed, "", second).await else {
            panic!("a closed port passed");
        };
        assert!(
            why.starts_with(&format!(
                "error: failed to connect service at \"127.0.0.1:{closed}\""
            )),
            "{why}"
        );
    }
}
