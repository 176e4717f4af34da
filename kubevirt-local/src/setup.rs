//! The server's data directory: the database, a generated CA and serving certificate, the bearer
//! token, and a kubeconfig (mode 0600) that points kubectl at the server.

use base64::Engine;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Setup failures.
#[derive(Debug, Error)]
pub enum SetupError {
    /// A file in the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("generating the TLS certificates: {0}")]
    Cert(#[from] rcgen::Error),
    /// The stored certificate or key is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), SetupError> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// TLS material of a data directory.
#[derive(Debug, Clone)]
pub struct Tls {
    /// CA certificate (PEM), for the kubeconfig.
    pub ca_pem: String,
    /// The rustls server configuration.
    pub config: Arc<rustls::ServerConfig>,
}

/// Load (or create on first use) the CA and the serving certificate for localhost/127.0.0.1.
pub fn tls(dir: &Path) -> Result<Tls, SetupError> {
    let (ca_path, crt_path, key_path) =
        (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"));
    if !(ca_path.exists() && crt_path.exists() && key_path.exists()) {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubevirt-rs local CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                127, 0, 0, 1,
            ])));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubevirt-rs apiserver");
        let cert = params.signed_by(&key, &ca)?;
        fs::write(&ca_path, ca.pem()).map_err(io(&ca_path))?;
        fs::write(&crt_path, cert.pem()).map_err(io(&crt_path))?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
    }
    let ca_pem = fs::read_to_string(&ca_path).map_err(io(&ca_path))?;
    let crt = fs::read(&crt_path).map_err(io(&crt_path))?;
    let key = fs::read(&key_path).map_err(io(&key_path))?;
    let certs = rustls_pemfile::certs(&mut crt.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SetupError::Tls(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut key.as_slice())
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .ok_or_else(|| SetupError::Tls(format!("{} holds no private key", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SetupError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem,
        config: Arc::new(config),
    })
}

/// Load (or create) the bearer token.
pub fn token(dir: &Path) -> Result<String, SetupError> {
    let path = dir.join("token");
    if let Ok(t) = fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok(t.trim().to_string());
    }
    let t = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    write_private(&path, t.as_bytes())?;
    Ok(t)
}

/// Write the kubeconfig for `server` (mode 0600) and return its path.
pub fn kubeconfig(
    dir: &Path,
    server: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> Result<PathBuf, SetupError> {
    let path = dir.join("kubeconfig");
    let cluster = match ca_pem {
        Some(ca) => format!(
            "    server: {server}\n    certificate-authority-data: {}\n",
            base64::engine::general_purpose::STANDARD.encode(ca)
        ),
        None => format!("    server: {server}\n"),
    };
    let user = match token {
        Some(t) => format!("    token: {t}\n"),
        None => "    {}\n".to_string(),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubevirt-local\n  cluster:\n{cluster}users:\n- name: admin\n  user:\n{user}contexts:\n- name: kubevirt-local\n  context:\n    cluster: kubevirt-local\n    user: admin\n    namespace: default\ncurrent-context: kubevirt-local\n"
    );
    write_private(&path, text.as_bytes())?;
    Ok(path)
}
