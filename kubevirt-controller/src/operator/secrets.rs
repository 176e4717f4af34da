//! The install's certificates and token, kept in the cluster: the CA in Secret `kubevirt-ca`
//! (made once, reused after), its bundle in ConfigMap `kubevirt-ca` (`ca-bundle`), virt-api's
//! serving certificate and the node agents' endpoint certificate (each remade when the CA it
//! was signed by changes), and the agents' token with their CA (Secret
//! `kubevirt-node-agent-token`, for both virt-api and virt-handler).

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use sha2::Digest;

use super::apply::{ApplyError, apply};
use super::certs::{self, KeyPairPem};
use super::components::{
    AGENT_TOKEN_SECRET, API_CERT_SECRET, CA_CONFIGMAP, CA_SECRET, HANDLER_CERT_SECRET, Install, api,
};

/// Which CA a certificate was signed by (SHA-256 of the CA's PEM).
const SIGNED_BY: &str = "kubevirt.io/signed-by-ca";

/// Errors keeping the certificates.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A certificate could not be made.
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    /// Reading a Secret failed.
    #[error("reading secret {name}: {source}")]
    Read {
        /// The Secret.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Writing one failed.
    #[error("writing the certificates: {0}")]
    Write(#[source] Box<ApplyError>),
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    let v = secret.data.as_ref()?.get(key)?;
    String::from_utf8(v.0.clone())
        .ok()
        .filter(|s| !s.is_empty())
}

fn fingerprint(pem: &str) -> String {
    sha2::Sha256::digest(pem.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn secret_object(
    install: &Install,
    name: &str,
    tls: bool,
    data: &BTreeMap<&str, String>,
    ca: Option<&str>,
) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut meta = install.metadata(name, true, "virt-operator");
    if let Some(ca) = ca {
        meta["annotations"][SIGNED_BY] = json!(fingerprint(ca));
    }
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(b64.encode(v.as_bytes()))))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta,
        "type": if tls { "kubernetes.io/tls" } else { "Opaque" }, "data": data})
}

async fn write(client: &Client, object: &Value) -> Result<(), SecretError> {
    apply(client, object)
        .await
        .map_err(|e| SecretError::Write(Box::new(e)))
}

/// Makes or reuses every certificate and the token; returns the CA (PEM) for the
/// APIServices' `caBundle`.
pub async fn ensure(client: &Client, install: &Install) -> Result<String, SecretError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &install.namespace);
    let get = |name: &'static str| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt(name)
                .await
                .map_err(|source| SecretError::Read {
                    name: name.into(),
                    source,
                })
        }
    };
    let stored = get(CA_SECRET).await?;
    let ca = match stored.as_ref().and_then(|s| {
        Some(KeyPairPem {
            cert: text(s, "tls.crt")?,
            key: text(s, "tls.key")?,
        })
    }) {
        Some(ca) => ca,
        None => {
            let ca = certs::new_ca()?;
            let data = BTreeMap::from([("tls.crt", ca.cert.clone()), ("tls.key", ca.key.clone())]);
            write(
                client,
                &secret_object(install, CA_SECRET, true, &data, None),
            )
            .await?;
            ca
        }
    };
    let bundle = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": install.metadata(CA_CONFIGMAP, true, "virt-operator"),
        "data": {"ca-bundle": ca.cert}});
    write(client, &bundle).await?;
    let signed_here = fingerprint(&ca.cert);
    for (name, names) in [
        (API_CERT_SECRET, api::service_names(&install.namespace)),
        (
            HANDLER_CERT_SECRET,
            vec![crate::node::endpoint::AGENT_SERVER_NAME.to_string()],
        ),
    ] {
        let current = get(name).await?;
        let fresh = current.as_ref().is_some_and(|s| {
            text(s, "tls.crt").is_some()
                && s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(SIGNED_BY))
                    == Some(&signed_here)
        });
        if !fresh {
            let pair = certs::new_serving(&ca, &names)?;
            let data = BTreeMap::from([("tls.crt", pair.cert), ("tls.key", pair.key)]);
            write(
                client,
                &secret_object(install, name, true, &data, Some(&ca.cert)),
            )
            .await?;
        }
    }
    let token = get(AGENT_TOKEN_SECRET)
        .await?
        .and_then(|s| text(&s, "token"))
        .unwrap_or_else(|| {
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        });
    let data = BTreeMap::from([("token", token), ("ca.crt", ca.cert.clone())]);
    write(
        client,
        &secret_object(install, AGENT_TOKEN_SECRET, false, &data, None),
    )
    .await?;
    Ok(ca.cert)
}

/// The Secrets and ConfigMap this module keeps, for removal: `(kind, name)`.
pub fn kept() -> [(&'static str, &'static str); 5] {
    [
        ("Secret", CA_SECRET),
        ("ConfigMap", CA_CONFIGMAP),
        ("Secret", API_CERT_SECRET),
        ("Secret", HANDLER_CERT_SECRET),
        ("Secret", AGENT_TOKEN_SECRET),
    ]
}
