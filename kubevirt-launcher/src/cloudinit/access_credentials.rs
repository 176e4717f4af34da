//! SSH public keys that `spec.accessCredentials` propagates through the cloud-init metadata
//! (`propagationMethod: noCloud` or `configDrive`).
//!
//! Like upstream, every value of the referenced secret is read, split into lines, and each
//! non-empty line that is not a `#` comment becomes one key, named by its position (`"0"`,
//! `"1"`, ...) across all credentials of that method.

use std::collections::BTreeMap;

use kubevirt_api::core::v1::AccessCredential;

use super::error::CloudInitError;
use super::secrets::{NoSuchSecret, SecretSource};

/// Which metadata file the keys go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// `propagationMethod.noCloud`: `public-keys` of `meta-data`.
    NoCloud,
    /// `propagationMethod.configDrive`: `public_keys` of `meta_data.json`.
    ConfigDrive,
}

/// The keys `credentials` (the VMI's `spec.accessCredentials`) propagate by `method`.
pub fn public_keys(
    credentials: &[AccessCredential],
    method: Propagation,
    secrets: &impl SecretSource,
) -> Result<BTreeMap<String, String>, CloudInitError> {
    let mut keys = BTreeMap::new();
    for (i, credential) in credentials.iter().enumerate() {
        let Some(ssh) = &credential.ssh_public_key else {
            continue;
        };
        let wanted = match method {
            Propagation::NoCloud => ssh.propagation_method.no_cloud.is_some(),
            Propagation::ConfigDrive => ssh.propagation_method.config_drive.is_some(),
        };
        let Some(secret) = ssh.source.secret.as_ref().filter(|_| wanted) else {
            continue;
        };
        let path = format!("spec.accessCredentials[{i}].sshPublicKey.source.secret.secretName");
        let missing = |_: NoSuchSecret| CloudInitError::MissingSecret {
            path: path.clone(),
            name: secret.secret_name.clone(),
        };
        for key in secrets.keys(&secret.secret_name).map_err(missing)? {
            let value = secrets
                .lookup(&secret.secret_name, &key)
                .map_err(missing)?
                .unwrap_or_default();
            for line in String::from_utf8_lossy(&value).lines() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    keys.insert(keys.len().to_string(), line.to_owned());
                }
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubevirt_api::core::v1::{
        AccessCredentialSecretSource, ConfigDriveSSHPublicKeyAccessCredentialPropagation,
        NoCloudSSHPublicKeyAccessCredentialPropagation, SSHPublicKeyAccessCredential,
        SSHPublicKeyAccessCredentialPropagationMethod, SSHPublicKeyAccessCredentialSource,
    };

    fn credential(secret: &str, method: Propagation) -> AccessCredential {
        let mut propagation = SSHPublicKeyAccessCredentialPropagationMethod::default();
        match method {
            Propagation::NoCloud => {
                propagation.no_cloud = Some(NoCloudSSHPublicKeyAccessCredentialPropagation {})
            }
            Propagation::ConfigDrive => {
                propagation.config_drive =
                    Some(ConfigDriveSSHPublicKeyAccessCredentialPropagation {})
            }
        }
        AccessCredential {
            ssh_public_key: Some(SSHPublicKeyAccessCredential {
                propagation_method: propagation,
                source: SSHPublicKeyAccessCredentialSource {
                    secret: Some(AccessCredentialSecretSource {
                        secret_name: secret.to_owned(),
                    }),
                },
            }),
            ..Default::default()
        }
    }

    fn secrets() -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        BTreeMap::from([
            (
                "keys".to_owned(),
                BTreeMap::from([
                    (
                        "a".to_owned(),
                        b"ssh-ed25519 AAA a@x\n\n# comment\n".to_vec(),
                    ),
                    ("b".to_owned(), b"ssh-rsa BBB b@x".to_vec()),
                ]),
            ),
            (
                "other".to_owned(),
                BTreeMap::from([("k".to_owned(), b"ssh-ed25519 CCC".to_vec())]),
            ),
        ])
    }

    #[test]
    fn keys_of_the_method_are_numbered() {
        let creds = [
            credential("keys", Propagation::NoCloud),
            credential("other", Propagation::ConfigDrive),
        ];
        let keys = public_keys(&creds, Propagation::NoCloud, &secrets()).unwrap();
        assert_eq!(
            keys,
            BTreeMap::from([
                ("0".to_owned(), "ssh-ed25519 AAA a@x".to_owned()),
                ("1".to_owned(), "ssh-rsa BBB b@x".to_owned()),
            ])
        );
        let keys = public_keys(&creds, Propagation::ConfigDrive, &secrets()).unwrap();
        assert_eq!(keys.len(), 1);
    }

    #[test]
    fn missing_secret_names_the_credential() {
        let creds = [
            credential("keys", Propagation::ConfigDrive),
            credential("gone", Propagation::NoCloud),
        ];
        assert_eq!(
            public_keys(&creds, Propagation::NoCloud, &secrets())
                .unwrap_err()
                .to_string(),
            "spec.accessCredentials[1].sshPublicKey.source.secret.secretName: secret \"gone\" \
             not found"
        );
    }
}
