//! Secrets referenced by `secretRef` and `networkDataSecretRef`, resolved by the caller.
//!
//! Upstream, virt-handler mounts each referenced secret into the launcher pod and the launcher
//! reads the files; here the caller hands the secrets' data in, so this module never talks to
//! an API server or a filesystem.

use std::collections::BTreeMap;

/// The keys user data is read from, first found wins (upstream's `userdata`, `userData`).
pub const USER_DATA_KEYS: &[&str] = &["userdata", "userData"];

/// The keys network data is read from, first found wins (upstream's `networkdata`,
/// `networkData`).
pub const NETWORK_DATA_KEYS: &[&str] = &["networkdata", "networkData"];

/// Looks up a secret's data by the secret's name, in the VMI's namespace.
pub trait SecretSource {
    /// The secret's value under `key`, `Ok(None)` when the secret exists without that key,
    /// `Err(NoSuchSecret)` when there is no such secret.
    fn lookup(&self, secret: &str, key: &str) -> Result<Option<Vec<u8>>, NoSuchSecret>;

    /// The secret's keys in byte order (SSH key secrets are read whole, like the files of a
    /// mounted secret), `Err(NoSuchSecret)` when there is no such secret.
    fn keys(&self, secret: &str) -> Result<Vec<String>, NoSuchSecret>;
}

/// A secret that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSuchSecret;

/// No secrets at all: every reference fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn lookup(&self, _secret: &str, _key: &str) -> Result<Option<Vec<u8>>, NoSuchSecret> {
        Err(NoSuchSecret)
    }

    fn keys(&self, _secret: &str) -> Result<Vec<String>, NoSuchSecret> {
        Err(NoSuchSecret)
    }
}

/// Secrets as a map of secret name to the secret's `data` (key to decoded bytes).
impl SecretSource for BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    fn lookup(&self, secret: &str, key: &str) -> Result<Option<Vec<u8>>, NoSuchSecret> {
        let data = self.get(secret).ok_or(NoSuchSecret)?;
        Ok(data.get(key).cloned())
    }

    fn keys(&self, secret: &str) -> Result<Vec<String>, NoSuchSecret> {
        Ok(self
            .get(secret)
            .ok_or(NoSuchSecret)?
            .keys()
            .cloned()
            .collect())
    }
}

/// Secrets as Kubernetes `Secret` objects keyed by name: `data`, then `stringData`.
impl SecretSource for BTreeMap<String, k8s_openapi::api::core::v1::Secret> {
    fn lookup(&self, secret: &str, key: &str) -> Result<Option<Vec<u8>>, NoSuchSecret> {
        let s = self.get(secret).ok_or(NoSuchSecret)?;
        let from_data = s
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone());
        let from_string = || {
            s.string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.clone().into_bytes())
        };
        Ok(from_data.or_else(from_string))
    }

    fn keys(&self, secret: &str) -> Result<Vec<String>, NoSuchSecret> {
        let s = self.get(secret).ok_or(NoSuchSecret)?;
        let mut keys: Vec<String> = s.data.iter().flat_map(|d| d.keys().cloned()).collect();
        keys.extend(s.string_data.iter().flat_map(|d| d.keys().cloned()));
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lookup() {
        let mut secrets = BTreeMap::new();
        secrets.insert(
            "s".to_owned(),
            BTreeMap::from([("userdata".to_owned(), b"x".to_vec())]),
        );
        assert_eq!(secrets.lookup("s", "userdata"), Ok(Some(b"x".to_vec())));
        assert_eq!(secrets.lookup("s", "userData"), Ok(None));
        assert_eq!(secrets.lookup("t", "userdata"), Err(NoSuchSecret));
        assert_eq!(NoSecrets.lookup("s", "userdata"), Err(NoSuchSecret));
        assert_eq!(
            SecretSource::keys(&secrets, "s"),
            Ok(vec!["userdata".to_owned()])
        );
    }

    #[test]
    fn secret_object_lookup() {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "userdata".to_owned(),
                ByteString(b"a".to_vec()),
            )])),
            string_data: Some(BTreeMap::from([("networkData".to_owned(), "b".to_owned())])),
            ..Secret::default()
        };
        let secrets = BTreeMap::from([("s".to_owned(), secret)]);
        assert_eq!(secrets.lookup("s", "userdata"), Ok(Some(b"a".to_vec())));
        assert_eq!(secrets.lookup("s", "networkData"), Ok(Some(b"b".to_vec())));
        assert_eq!(secrets.lookup("s", "other"), Ok(None));
        assert_eq!(
            SecretSource::keys(&secrets, "s"),
            Ok(vec!["networkData".to_owned(), "userdata".to_owned()])
        );
    }
}
