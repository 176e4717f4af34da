//! Serving the API on its own (`kubevirt-controller api`), for a cluster's `APIService`: HTTPS
//! with the given certificate; a client certificate signed by the cluster's front-proxy CA
//! (`requestheader-client-ca-file` in `kube-system/extension-apiserver-authentication`) marks
//! requests whose `X-Remote-User`/`X-Remote-Group` headers are trusted ([`FrontProxyVerified`]).

use std::path::Path;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;

use super::FrontProxyVerified;

/// Errors setting up the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A certificate or key file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable key.
    #[error("{0}: no PEM private key found")]
    NoKey(std::path::PathBuf),
    /// rustls refused the certificate, key or CA.
    #[error("TLS set-up: {0}")]
    Tls(String),
}

fn read(path: &Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The front-proxy CA bundle of the cluster, if it publishes one.
pub async fn front_proxy_ca(client: &Client) -> Option<String> {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = cms
        .get_opt("extension-apiserver-authentication")
        .await
        .ok()??;
    cm.data?.get("requestheader-client-ca-file").cloned()
}

/// The TLS configuration: `cert`/`key` files; client certificates verified against
/// `front_proxy_ca` (PEM) if given, optional either way.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    front_proxy_ca: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &read(cert)?[..])
        .collect::<Result<_, _>>()
        .map_err(|source| ServeError::Read {
            path: cert.to_path_buf(),
            source,
        })?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &read(key)?[..])
        .map_err(|source| ServeError::Read {
            path: key.to_path_buf(),
            source,
        })?
        .ok_or_else(|| ServeError::NoKey(key.to_path_buf()))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServeError::Tls(e.to_string()))?;
    let builder = match front_proxy_ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem.as_bytes()).flatten() {
                roots.add(c).map_err(|e| ServeError::Tls(e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::new(rustls::crypto::ring::default_provider()),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| ServeError::Tls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves; requests on connections that
/// presented a verified client certificate carry [`FrontProxyVerified`].
pub async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut shutdown => return Ok(()),
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let verified = stream.get_ref().1.peer_certificates().is_some();
            let app = tower::ServiceExt::map_request(
                app,
                move |mut r: hyper::Request<hyper::body::Incoming>| {
                    if verified {
                        r.extensions_mut().insert(FrontProxyVerified);
                    }
                    r
                },
            );
            let service = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        });
    }
}
