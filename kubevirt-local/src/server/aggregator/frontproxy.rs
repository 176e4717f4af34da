//! The front proxy's identity, as kube-apiserver's `--requestheader-client-ca-file` and
//! `--proxy-client-cert-file` give it: a requestheader CA and a client certificate it signs
//! (CN `front-proxy-client`), kept in the data directory (`front-proxy-ca.crt`,
//! `front-proxy-client.crt`, `front-proxy-client.key`), and the
//! `kube-system/extension-apiserver-authentication` ConfigMap that tells aggregated servers to
//! trust that CA and which headers carry the caller.

use crate::error::ApiError;
use crate::server::State;
use crate::setup::SetupError;
use crate::storage::{EventType, ObjectKey};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use std::path::Path;

/// The client certificate's common name (the one name `requestheader-allowed-names` allows).
pub const CLIENT_NAME: &str = "front-proxy-client";
/// The header carrying the caller's name.
pub const USER_HEADER: &str = "X-Remote-User";
/// The header carrying each of the caller's groups (repeated).
pub const GROUP_HEADER: &str = "X-Remote-Group";
/// The prefix of the headers carrying the caller's extra attributes.
pub const EXTRA_PREFIX: &str = "X-Remote-Extra-";
/// The ConfigMap's name (in `kube-system`).
pub const CONFIGMAP: &str = "extension-apiserver-authentication";

/// The front proxy's CA and client certificate.
#[derive(Debug)]
pub struct FrontProxy {
    /// The requestheader CA (PEM).
    pub ca_pem: String,
    /// The client certificate chain.
    pub cert: Vec<CertificateDer<'static>>,
    /// Its key.
    pub key: PrivateKeyDer<'static>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FrontProxy {
    /// Load the CA and client certificate from `dir`, made on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, SetupError> {
        let ca_path = dir.join("front-proxy-ca.crt");
        let crt_path = dir.join("front-proxy-client.crt");
        let key_path = dir.join("front-proxy-client.key");
        if !(ca_path.exists() && crt_path.exists() && key_path.exists()) {
            let ca_key = rcgen::KeyPair::generate()?;
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "kubevirt-rs front-proxy CA");
            ca_params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
            let key = rcgen::KeyPair::generate()?;
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, CLIENT_NAME);
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::DigitalSignature,
                rcgen::KeyUsagePurpose::KeyEncipherment,
            ];
            let cert = params.signed_by(&key, &ca)?;
            std::fs::write(&ca_path, ca.pem()).map_err(io(&ca_path))?;
            std::fs::write(&crt_path, cert.pem()).map_err(io(&crt_path))?;
            crate::setup::write_atomic(&key_path, key.serialize_pem().as_bytes())?;
        }
        let ca_pem = std::fs::read_to_string(&ca_path).map_err(io(&ca_path))?;
        let crt = std::fs::read(&crt_path).map_err(io(&crt_path))?;
        let key = std::fs::read(&key_path).map_err(io(&key_path))?;
        let pem = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SetupError::Pem { path, source }
        };
        let cert = rustls_pemfile::certs(&mut crt.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem(&crt_path))?;
        let key = rustls_pemfile::private_key(&mut key.as_slice())
            .map_err(pem(&key_path))?
            .ok_or_else(|| SetupError::NoKey(key_path.clone()))?;
        Ok(Self { ca_pem, cert, key })
    }
}

/// The ConfigMap's data, key for key as kube-apiserver writes it; `client_ca` is the CA client
/// certificates of the API server itself chain to, if it has one.
pub fn configmap_data(front_proxy_ca: &str, client_ca: Option<&str>) -> Value {
    let list = |s: &str| json!([s]).to_string();
    let mut data = json!({
        "requestheader-client-ca-file": front_proxy_ca,
        "requestheader-username-headers": list(USER_HEADER),
        "requestheader-group-headers": list(GROUP_HEADER),
        "requestheader-extra-headers-prefix": list(EXTRA_PREFIX),
        "requestheader-allowed-names": list(CLIENT_NAME),
    });
    if let Some(ca) = client_ca {
        data["client-ca-file"] = json!(ca);
    }
    data
}

/// The Role kube-apiserver's bootstrap policy makes in `kube-system` so that aggregated
/// servers (bound to it, as the operator binds virt-api) may read the ConfigMap.
pub const READER_ROLE: &str = "extension-apiserver-authentication-reader";

fn reader_role() -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": READER_ROLE, "namespace": "kube-system",
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": crate::server::state::now(),
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"],
            "resourceNames": [CONFIGMAP], "verbs": ["get", "list", "watch"]}]})
}

/// Write the ConfigMap (created, or its data brought up to date), as kube-apiserver does at
/// every start, and the reader Role if it is missing (an administrator's edits stay).
pub fn publish(state: &State, data: Value) -> Result<(), ApiError> {
    let key = ObjectKey::new("/configmaps", "kube-system", CONFIGMAP);
    let role = ObjectKey::new(crate::server::authz::ROLES, "kube-system", READER_ROLE);
    state.store.write(|t| -> Result<(), ApiError> {
        if t.get(&role)?.is_none() {
            t.put(&role, reader_role(), EventType::Added)?;
        }
        match t.get(&key)? {
            Some(existing) if existing["data"] == data => {}
            Some(mut existing) => {
                existing["data"] = data;
                t.put(&key, existing, EventType::Modified)?;
            }
            None => {
                let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": CONFIGMAP, "namespace": "kube-system",
                        "uid": uuid::Uuid::new_v4().to_string(),
                        "creationTimestamp": crate::server::state::now()},
                    "data": data});
                t.put(&key, obj, EventType::Added)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configmap_names_what_kube_apiserver_names() {
        let d = configmap_data("CA", Some("CLIENT"));
        assert_eq!(d["requestheader-client-ca-file"], "CA");
        assert_eq!(d["client-ca-file"], "CLIENT");
        assert_eq!(d["requestheader-username-headers"], "[\"X-Remote-User\"]");
        assert_eq!(d["requestheader-group-headers"], "[\"X-Remote-Group\"]");
        assert_eq!(
            d["requestheader-extra-headers-prefix"],
            "[\"X-Remote-Extra-\"]"
        );
        assert_eq!(d["requestheader-allowed-names"], "[\"front-proxy-client\"]");
        assert!(configmap_data("CA", None).get("client-ca-file").is_none());
    }

    #[test]
    fn the_identity_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("kv-frontproxy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = FrontProxy::load_or_create(&dir).unwrap();
        let b = FrontProxy::load_or_create(&dir).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.cert, b.cert);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
