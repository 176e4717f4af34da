//! One request to an aggregated server: HTTPS to the endpoint, the serving certificate verified
//! against the APIService's `caBundle` for `<svc>.<ns>.svc` (or not at all with
//! `insecureSkipTLSVerify`), this server's front-proxy client certificate presented. An upgrade
//! (a websocket or SPDY stream: console, port-forward) is spliced byte for byte once both sides
//! have switched protocols.

use super::frontproxy::FrontProxy;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use kubevirt_kubelet::tls::AnyCertificate;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request could not reach the aggregated server.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `caBundle` holds no certificate and verification is not skipped.
    #[error(
        "the APIService has no caBundle to verify {0} with (set spec.caBundle or spec.insecureSkipTLSVerify)"
    )]
    NoCaBundle(String),
    /// The CA bundle or client certificate was refused.
    #[error("TLS set-up: {0}")]
    Tls(#[from] rustls::Error),
    /// The server name is not valid.
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
    /// Connecting or the TLS handshake failed.
    #[error("dialing {at}: {source}")]
    Dial {
        /// The endpoint.
        at: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("the request to {at} failed: {source}")]
    Http {
        /// The endpoint.
        at: SocketAddr,
        /// Why.
        #[source]
        source: hyper::Error,
    },
}

/// The client TLS configuration for an APIService: `ca_bundle` is its decoded `caBundle` (PEM).
pub fn client_config(
    front: &FrontProxy,
    ca_bundle: &[u8],
    insecure: bool,
    server_name: &str,
) -> Result<Arc<rustls::ClientConfig>, ProxyError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut &ca_bundle[..]).flatten() {
            roots.add(c)?;
        }
        if roots.is_empty() {
            return Err(ProxyError::NoCaBundle(server_name.to_string()));
        }
        builder.with_root_certificates(roots)
    };
    let mut config = builder.with_client_auth_cert(front.cert.clone(), front.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Send `req` (its path and query as the aggregated server should see them, headers already
/// rewritten) to `at`; the caller's pending upgrade, if any, is `upgrade`.
pub async fn send(
    at: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    server_name: &str,
    req: Request<Body>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<Body>, ProxyError> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|_| ProxyError::ServerName(server_name.to_string()))?;
    let dial = async {
        let tcp = tokio::net::TcpStream::connect(at).await?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, dial)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ))
        })
        .map_err(|source| ProxyError::Dial { at, source })?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|source| ProxyError::Http { at, source })?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|source| ProxyError::Http { at, source })?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = upgrade
    {
        let backend = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (Ok(client), Ok(backend)) = (client.await, backend.await) else {
                return;
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut backend = hyper_util::rt::TokioIo::new(backend);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
    }
    Ok(resp.map(Body::new))
}
