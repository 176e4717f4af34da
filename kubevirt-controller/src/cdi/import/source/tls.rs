//! The HTTP source's TLS: the system's CA roots plus a DataVolume's `certConfigMap` (and the
//! cluster proxy's CA bundle), or with `insecureSkipVerify` no verification at all.

use super::http::HttpError;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The client TLS configuration: the system's roots and the PEM files in `cert_dirs`; with
/// `insecure`, any certificate.
pub fn client_config(
    cert_dirs: &[PathBuf],
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::TlsSetup(e.to_string()))?;
    if insecure {
        tracing::warn!("insecureSkipVerify: the server's certificate is not verified");
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth();
        return Ok(Arc::new(config));
    }
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for dir in cert_dirs {
        add_pem_dir(&mut roots, dir)?;
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// A client TLS configuration trusting the DER certificates `roots` (a kubeconfig's cluster CA)
/// or, with none, the system's roots; with `insecure`, any certificate.
pub fn roots_config(
    roots: &[Vec<u8>],
    insecure: bool,
) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    if insecure || roots.is_empty() {
        return client_config(&[], insecure);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::TlsSetup(e.to_string()))?;
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| HttpError::TlsSetup(e.to_string()))?;
    }
    Ok(Arc::new(
        builder.with_root_certificates(store).with_no_client_auth(),
    ))
}

/// Every certificate in the regular files of `dir` (names starting with `.` skipped: a
/// ConfigMap volume's `..data`).
fn add_pem_dir(roots: &mut rustls::RootCertStore, dir: &Path) -> Result<(), HttpError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HttpError::CertDir { path, source }
    };
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(err(dir))?
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names {
        if !std::fs::metadata(&path).map_err(err(&path))?.is_file() {
            continue;
        }
        let pem = std::fs::read(&path).map_err(err(&path))?;
        let mut found = 0;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(err(&path))?;
            roots
                .add(cert)
                .map_err(|e| err(&path)(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            found += 1;
        }
        if found == 0 {
            tracing::warn!(file = %path.display(), "no PEM certificate in the CA file");
        }
    }
    Ok(())
}

/// Accepts every certificate, still checking the handshake's signatures.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_cert_dir_is_named() {
        let e = client_config(&[PathBuf::from("/nonexistent/certs")], false).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/certs"), "{e}");
    }
}
