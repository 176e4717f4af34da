//! The server's data directory: the database, a generated CA and serving certificate, the client
//! CA ([`crate::x509`]), the bearer token, and a kubeconfig (mode 0600, a [`kube::config::Kubeconfig`] written atomically) that
//! points kubectl at the server.

use base64::Engine;
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};
use secrecy::SecretString;
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
    /// The stored certificate or key is not valid PEM.
    #[error("{}: not a PEM certificate or key: {source}", path.display())]
    Pem {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The stored key file holds no private key.
    #[error("{}: holds no private key (remove it to generate a new one)", .0.display())]
    NoKey(PathBuf),
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The kubeconfig could not be encoded.
    #[error("encoding the kubeconfig: {0}")]
    Kubeconfig(#[from] serde_saphyr::SerializeError),
    /// The data directory has no server yet (no token or kubeconfig).
    #[error(
        "{}: no server has run on this data directory yet (start `kubevirt-local up` or `kubevirt-local apiserver --data-dir` with it first)",
        .0.display()
    )]
    NoServer(PathBuf),
    /// The server runs without authentication (`--insecure-http`): identities mean nothing.
    #[error(
        "{}: the server runs without authentication (--insecure-http): every client is the administrator",
        .0.display()
    )]
    NoAuthentication(PathBuf),
    /// The administrator's kubeconfig cannot be read back.
    #[error("{}: {message}", path.display())]
    BadKubeconfig {
        /// Which file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The user name or a group cannot be put in a token.
    #[error("{0}")]
    Identity(#[from] crate::semantics::user_token::ClaimError),
    /// A certificate file holds no certificate.
    #[error("{}: holds no certificate (remove it to generate a new one)", .0.display())]
    NoCertificate(PathBuf),
    /// A client certificate could not be made.
    #[error("making a client certificate: {0}")]
    ClientCertificate(&'static str),
    /// The client certificate verifier could not be made.
    #[error("verifying client certificates: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
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
    /// The rustls server configuration (asking for a client certificate, see [`crate::x509`]).
    pub config: Arc<rustls::ServerConfig>,
    /// The client CA's certificate (PEM).
    pub client_ca_pem: String,
    /// Who the client certificates the client CA issued speak for.
    pub client_auth: Arc<crate::x509::ClientCertAuth>,
}

/// Load (or create on first use) the CA and the serving certificate for localhost/127.0.0.1,
/// and the client CA ([`crate::x509::ClientCa`]).
pub fn tls(dir: &Path) -> Result<Tls, SetupError> {
    tls_for(dir, &[])
}

/// Like [`tls`], with the serving certificate also valid for `ips` (where pods reach the
/// server). Certificates made for other addresses are made anew, with a new CA: the IP
/// addresses they are valid for are recorded in `tls.sans`.
pub fn tls_for(dir: &Path, ips: &[std::net::IpAddr]) -> Result<Tls, SetupError> {
    let (ca_path, crt_path, key_path) =
        (dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key"));
    let sans_path = dir.join("tls.sans");
    let mut sans: Vec<std::net::IpAddr> = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    sans.extend(ips.iter().filter(|ip| !ip.is_loopback()));
    let recorded: String = sans.iter().map(|ip| format!("{ip}\n")).collect();
    // Certificates from before `tls.sans` was kept are valid for 127.0.0.1 alone.
    let current = fs::read_to_string(&sans_path).unwrap_or_else(|_| "127.0.0.1\n".into());
    let fresh = ca_path.exists() && crt_path.exists() && key_path.exists() && current == recorded;
    if !fresh {
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
        for ip in &sans {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(*ip));
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubevirt-rs apiserver");
        let cert = params.signed_by(&key, &ca)?;
        fs::write(&ca_path, ca.pem()).map_err(io(&ca_path))?;
        fs::write(&crt_path, cert.pem()).map_err(io(&crt_path))?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        fs::write(&sans_path, &recorded).map_err(io(&sans_path))?;
    }
    let ca_pem = fs::read_to_string(&ca_path).map_err(io(&ca_path))?;
    let crt = fs::read(&crt_path).map_err(io(&crt_path))?;
    let key = fs::read(&key_path).map_err(io(&key_path))?;
    let pem = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SetupError::Pem { path, source }
    };
    let certs = rustls_pemfile::certs(&mut crt.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(&crt_path))?;
    let key = rustls_pemfile::private_key(&mut key.as_slice())
        .map_err(pem(&key_path))?
        .ok_or_else(|| SetupError::NoKey(key_path.clone()))?;
    let client_ca = crate::x509::ClientCa::load_or_create(dir)?;
    let client_auth = client_ca.authenticator()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_auth.handshake())
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem,
        config: Arc::new(config),
        client_ca_pem: client_ca.ca_pem,
        client_auth,
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

/// The kubeconfig for `server`: one cluster (with its CA when served over TLS), one user (with
/// the bearer token, if any) and one context on namespace `default`, current.
pub fn kubeconfig_for(server: &str, ca_pem: Option<&str>, token: Option<&str>) -> Kubeconfig {
    let name = "kubevirt-local";
    Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: name.into(),
            cluster: Some(Cluster {
                server: Some(server.into()),
                certificate_authority_data: ca_pem
                    .map(|ca| base64::engine::general_purpose::STANDARD.encode(ca)),
                ..Default::default()
            }),
            ..Default::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: "admin".into(),
            auth_info: Some(AuthInfo {
                token: token.map(|t| SecretString::from(t.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        contexts: vec![NamedContext {
            name: name.into(),
            context: Some(Context {
                cluster: name.into(),
                user: Some("admin".into()),
                namespace: Some("default".into()),
                ..Default::default()
            }),
            ..Default::default()
        }],
        current_context: Some(name.into()),
        ..Default::default()
    }
}

/// How a user kubeconfig proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A user token signed with the data directory's token.
    Token,
    /// A client certificate the client CA issued (CN the name, an O per group).
    ClientCertificate,
}

/// A kubeconfig (YAML) for user `name` in `groups` against the server of `dir`: the cluster and
/// CA of the administrator's kubeconfig, and a user token (see
/// [`crate::semantics::user_token`]) or a client certificate ([`crate::x509`]) valid for
/// `seconds` from now.
pub fn user_kubeconfig(
    dir: &Path,
    name: &str,
    groups: &[String],
    seconds: i64,
    credential: Credential,
) -> Result<String, SetupError> {
    let user = crate::semantics::user_token::UserClaims::new(name, groups)?;
    let secret = fs::read_to_string(dir.join("token"))
        .map_err(|_| SetupError::NoServer(dir.to_path_buf()))?;
    let admin_path = dir.join("kubeconfig");
    let admin = Kubeconfig::read_from(&admin_path).map_err(|e| SetupError::BadKubeconfig {
        path: admin_path.clone(),
        message: e.to_string(),
    })?;
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| SetupError::BadKubeconfig {
            path: admin_path.clone(),
            message: "names no cluster".into(),
        })?;
    let server = cluster.server.clone().unwrap_or_default();
    if server.starts_with("http://") {
        return Err(SetupError::NoAuthentication(dir.to_path_buf()));
    }
    let ca = cluster
        .certificate_authority_data
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let now = jiff::Timestamp::now().as_second();
    let mut config = match credential {
        Credential::Token => {
            let signer =
                crate::semantics::user_token::UserSigner::from_secret(secret.trim().as_bytes());
            let token = signer.issue(&user, now, seconds);
            kubeconfig_for(&server, ca.as_deref(), Some(&token))
        }
        Credential::ClientCertificate => {
            let (cert, key) =
                crate::x509::ClientCa::load(dir)?.issue(name, groups, now, seconds)?;
            let mut config = kubeconfig_for(&server, ca.as_deref(), None);
            if let Some(auth) = config.auth_infos[0].auth_info.as_mut() {
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                auth.client_certificate_data = Some(b64(&cert));
                auth.client_key_data = Some(SecretString::from(b64(&key)));
            }
            config
        }
    };
    let context = format!("{name}@kubevirt-local");
    config.auth_infos[0].name = name.to_string();
    config.contexts[0].name.clone_from(&context);
    if let Some(c) = config.contexts[0].context.as_mut() {
        c.user = Some(name.to_string());
    }
    config.current_context = Some(context);
    Ok(serde_saphyr::to_string(&config)?)
}

/// Write `config` as `dir/kubeconfig` (mode 0600, atomically: a reader sees the old file or
/// the whole new one) and return its path.
pub fn write_kubeconfig(dir: &Path, config: &Kubeconfig) -> Result<PathBuf, SetupError> {
    let path = dir.join("kubeconfig");
    let text = serde_saphyr::to_string(config)?;
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Write the kubeconfig for `server` (see [`kubeconfig_for`], [`write_kubeconfig`]) and return
/// its path.
pub fn kubeconfig(
    dir: &Path,
    server: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
) -> Result<PathBuf, SetupError> {
    write_kubeconfig(dir, &kubeconfig_for(server, ca_pem, token))
}

/// Write `data` to `path` (mode 0600) so that a reader sees the old content or the whole new
/// one, never a part: a synced temporary file in the same directory renamed over `path`.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SetupError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    write_private(&tmp, data)?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_reads_back_as_written() {
        let dir = std::env::temp_dir().join(format!("kv-setup-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        let path = kubeconfig(&dir, "https://127.0.0.1:1", Some("CA"), Some("tok")).unwrap();
        let back = Kubeconfig::read_from(&path).unwrap();
        let cluster = back.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:1"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        let user = back.auth_infos[0].auth_info.as_ref().unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(user.token.as_ref().unwrap().expose_secret(), "tok");
        assert_eq!(back.current_context.as_deref(), Some("kubevirt-local"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
