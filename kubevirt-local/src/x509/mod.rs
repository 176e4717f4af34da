//! Users from client certificates, as kube-apiserver's `--client-ca-file`: a client CA kept in
//! the data directory (`client-ca.crt`, `client-ca.key`, made on first start), the certificates
//! it issues (`kubevirt-local kubeconfig --client-certificate`: CN the user name, one O per
//! group), and the authenticator that turns a verified certificate back into a user.
//!
//! The client CA is its own CA: neither the serving CA (`ca.crt`) nor the front proxy's
//! requestheader CA (`front-proxy-ca.crt`), so the aggregator's client certificate is no user
//! here, and a user's certificate is no front proxy to an aggregated server.
//!
//! The TLS handshake asks for a certificate (hinting the client CA, as Go's server does) but
//! does not require one, and accepts any chain once the client proved it holds the key; the
//! chain is verified against the client CA, expiry included, on every request
//! ([`ClientCertAuth::user`]). That is kube-apiserver's split (`tls.RequestClientCert`, then the
//! x509 authenticator per request): a certificate that does not verify is not refused at the
//! handshake but authenticates no one, so the request gets a **401** unless a bearer token
//! authenticates it.

pub mod der;

use crate::server::authn::UserInfo;
use crate::setup::SetupError;
use base64::Engine;
use rcgen::{CertificateParams, KeyPair, SigningKey};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

/// The client CA's certificate in the data directory.
pub const CA_CERT: &str = "client-ca.crt";
/// Its key.
pub const CA_KEY: &str = "client-ca.key";
const CA_NAME: &str = "kubevirt-rs client CA";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The client CA: what it signs user certificates with.
#[derive(Debug)]
pub struct ClientCa {
    /// The CA certificate (PEM): `client-ca-file` of
    /// `kube-system/extension-apiserver-authentication`.
    pub ca_pem: String,
    ca: CertificateDer<'static>,
    key: KeyPair,
}

impl ClientCa {
    /// The client CA of `dir`, made if it has none.
    pub fn load_or_create(dir: &Path) -> Result<Self, SetupError> {
        let (crt, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !(crt.exists() && key.exists()) {
            let ca_key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, CA_NAME);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let ca = params.self_signed(&ca_key)?;
            crate::setup::write_atomic(&key, ca_key.serialize_pem().as_bytes())?;
            std::fs::write(&crt, ca.pem()).map_err(io(&crt))?;
        }
        Self::load(dir)
    }

    /// The client CA of `dir`; [`SetupError::NoServer`] when no server made one yet.
    pub fn load(dir: &Path) -> Result<Self, SetupError> {
        let (crt, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !(crt.exists() && key.exists()) {
            return Err(SetupError::NoServer(dir.to_path_buf()));
        }
        let ca_pem = std::fs::read_to_string(&crt).map_err(io(&crt))?;
        let ca = rustls_pemfile::certs(&mut ca_pem.as_bytes())
            .next()
            .ok_or_else(|| SetupError::NoCertificate(crt.clone()))?
            .map_err(|source| SetupError::Pem {
                path: crt.clone(),
                source,
            })?;
        let key_pem = std::fs::read_to_string(&key).map_err(io(&key))?;
        let key = KeyPair::from_pem(&key_pem)?;
        Ok(Self { ca_pem, ca, key })
    }

    /// A certificate (PEM) and its key (PEM) for user `name` in `groups`, valid for `seconds`
    /// from `now` (Unix seconds; from a minute before, for clocks that differ a little).
    pub fn issue(
        &self,
        name: &str,
        groups: &[String],
        now: i64,
        seconds: i64,
    ) -> Result<(String, String), SetupError> {
        if name.is_empty() || seconds <= 0 {
            return Err(SetupError::ClientCertificate(
                "a client certificate needs a user name and a positive lifetime",
            ));
        }
        let at = |t: i64| {
            time::OffsetDateTime::from_unix_timestamp(t).map_err(|_| {
                SetupError::ClientCertificate("the expiration is outside what a certificate holds")
            })
        };
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.not_before = at(now - 60)?;
        params.not_after = at(now.saturating_add(seconds))?;
        let mut serial = *uuid::Uuid::new_v4().as_bytes();
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        // Signed by rcgen, then its names replaced (rcgen keeps one O; a user has a group per
        // O) with the CA's own subject as issuer, and signed again with the CA's key.
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, CA_NAME);
        let issuer = rcgen::Issuer::new(ca_params, &self.key);
        let draft = params.signed_by(&key, &issuer)?;
        let malformed = || SetupError::ClientCertificate("the client CA certificate is malformed");
        let ca_subject = der::subject(&self.ca).ok_or_else(malformed)?;
        let (tbs, alg) = der::replace_names(draft.der(), ca_subject, &der::name(name, groups))
            .ok_or_else(malformed)?;
        let signature = self.key.sign(&tbs)?;
        let cert = der::assemble(&tbs, &alg, &signature);
        Ok((pem("CERTIFICATE", &cert), key.serialize_pem()))
    }

    /// The authenticator of the certificates this CA issued.
    pub fn authenticator(&self) -> Result<Arc<ClientCertAuth>, SetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .allow_unauthenticated()
        .build()?;
        Ok(Arc::new(ClientCertAuth { verifier }))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Why a client certificate authenticates no one.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The chain does not verify against the client CA (another CA, expired, not for clients).
    #[error("the client certificate does not verify against the client CA: {0}")]
    Unverified(#[from] rustls::Error),
    /// It verifies but names no user (no common name).
    #[error("the client certificate has no common name (the user name)")]
    NoName,
}

/// Verifies client certificates against the client CA and reads their user.
#[derive(Debug)]
pub struct ClientCertAuth {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCertAuth {
    /// The user of `chain` (leaf first) at `now`: CN the name, the O values its groups (and
    /// `system:authenticated`).
    pub fn user(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<UserInfo, Refused> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(Refused::NoName);
        };
        self.verifier.verify_client_cert(leaf, intermediates, now)?;
        let (cn, groups) = der::subject(leaf)
            .and_then(der::names)
            .ok_or(Refused::NoName)?;
        let name = cn.filter(|n| !n.is_empty()).ok_or(Refused::NoName)?;
        Ok(UserInfo::user(&name, &groups))
    }

    /// The handshake's verifier: asks for a certificate, hinting the client CA, and checks the
    /// client holds its key; the chain itself is left to [`ClientCertAuth::user`].
    pub fn handshake(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::new(Handshake {
            inner: self.verifier.clone(),
        })
    }
}

#[derive(Debug)]
struct Handshake {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for Handshake {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Verified per request, as kube-apiserver does (see the module's doc).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The client certificate chain a connection presented (leaf first), put in each of its
/// requests' extensions by the TLS acceptor.
#[derive(Debug, Clone)]
pub struct PeerChain(pub Arc<Vec<CertificateDer<'static>>>);

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kv-x509-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn chain(pem: &str) -> Vec<CertificateDer<'static>> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn an_issued_certificate_is_its_user_until_it_expires() {
        let d = dir();
        let ca = ClientCa::load_or_create(&d).unwrap();
        assert_eq!(ca.ca_pem, ClientCa::load_or_create(&d).unwrap().ca_pem);
        let auth = ca.authenticator().unwrap();
        let now = jiff::Timestamp::now().as_second();
        let groups = vec!["dev".to_string(), "ops".into()];
        let (crt, _key) = ca.issue("alice", &groups, now, 3600).unwrap();
        let at = |t: i64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(t as u64));
        let user = auth.user(&chain(&crt), at(now)).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "ops", "system:authenticated"]);
        let expired = auth.user(&chain(&crt), at(now + 3601)).unwrap_err();
        assert!(expired.to_string().contains("does not verify"), "{expired}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn another_cas_certificate_is_no_one() {
        let (a, b) = (dir(), dir());
        let ours = ClientCa::load_or_create(&a).unwrap();
        let theirs = ClientCa::load_or_create(&b).unwrap();
        let now = jiff::Timestamp::now().as_second();
        let (crt, _) = theirs.issue("mallory", &[], now, 3600).unwrap();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now as u64));
        assert!(matches!(
            ours.authenticator().unwrap().user(&chain(&crt), at),
            Err(Refused::Unverified(_))
        ));
        assert!(ours.issue("", &[], now, 1).is_err());
        assert!(ours.issue("x", &[], now, 0).is_err());
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }
}
