//! The install's certificates: one CA (kept in Secret `kubevirt-ca`) signing virt-api's serving
//! certificate (for its Service's names) and the node agents' endpoint certificate (for
//! [`crate::node::endpoint::AGENT_SERVER_NAME`]). Pure: PEM in, PEM out; [`super::secrets`]
//! keeps them in the cluster.

/// The CA's common name; the CA is rebuilt from it and the stored key to sign (its subject and
/// key identifier are all a signature names).
const CA_NAME: &str = "kubevirt.io";

/// A certificate and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairPem {
    /// The certificate.
    pub cert: String,
    /// The private key.
    pub key: String,
}

/// Errors making a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused (a bad name, a key that does not parse).
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// A new CA.
pub fn new_ca() -> Result<KeyPairPem, CertError> {
    let key = rcgen::KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    Ok(KeyPairPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A serving certificate for `names` (the first is the common name) signed by `ca`.
pub fn new_serving(ca: &KeyPairPem, names: &[String]) -> Result<KeyPairPem, CertError> {
    let ca_key = rcgen::KeyPair::from_pem(&ca.key)?;
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    if let Some(first) = names.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, first.as_str());
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(KeyPairPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rustls (what virt-api and the node agents serve with, and what verifies them) accepts
    /// the pair and trusts it through the CA for the names given.
    #[test]
    fn a_serving_certificate_verifies_against_its_ca() {
        use rustls::client::danger::ServerCertVerifier;
        let ca = new_ca().unwrap();
        let names = vec!["virt-api.kubevirt.svc".to_string()];
        let leaf = new_serving(&ca, &names).unwrap();
        let dir = kubevirt_testsupport::tempdir("operator-certs");
        let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&crt, &leaf.cert).unwrap();
        std::fs::write(&key, &leaf.key).unwrap();
        crate::api::serve::tls_config(&crt, &key, None).expect("a usable serving pair");
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca.cert.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let end = rustls_pemfile::certs(&mut leaf.cert.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("virt-api.kubevirt.svc").unwrap();
        verifier
            .verify_server_cert(&end, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .expect("signed by the CA for the name");
        let other = rustls::pki_types::ServerName::try_from("elsewhere").unwrap();
        assert!(
            verifier
                .verify_server_cert(&end, &[], &other, &[], rustls::pki_types::UnixTime::now())
                .is_err()
        );
    }
}
