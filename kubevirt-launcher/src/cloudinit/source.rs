//! Where user data and network data come from: inline, base64 or a secret. Shared by NoCloud
//! and ConfigDrive, whose API types have the same six fields.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kubevirt_api::core::v1::{CloudInitConfigDriveSource, CloudInitNoCloudSource};

use super::error::CloudInitError;
use super::secrets::{NETWORK_DATA_KEYS, SecretSource, USER_DATA_KEYS};

/// The six data fields of a cloud-init volume source, borrowed. Empty strings count as unset,
/// as upstream treats them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataFields<'a> {
    /// `userData`.
    pub user_data: Option<&'a str>,
    /// `userDataBase64`.
    pub user_data_base64: Option<&'a str>,
    /// `secretRef.name` (upstream's `UserDataSecretRef`).
    pub secret_ref: Option<&'a str>,
    /// `networkData`.
    pub network_data: Option<&'a str>,
    /// `networkDataBase64`.
    pub network_data_base64: Option<&'a str>,
    /// `networkDataSecretRef.name`.
    pub network_data_secret_ref: Option<&'a str>,
}

fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// The NoCloud and ConfigDrive sources carry the same six data fields under the same names
/// (two generated types, one upstream shape), so one reading serves both.
macro_rules! data_fields_from {
    ($($source:ty),+) => {$(
        impl<'a> From<&'a $source> for DataFields<'a> {
            fn from(s: &'a $source) -> Self {
                DataFields {
                    user_data: set(&s.user_data),
                    user_data_base64: set(&s.user_data_base64),
                    secret_ref: s.secret_ref.as_ref().map(|r| r.name.as_str()),
                    network_data: set(&s.network_data),
                    network_data_base64: set(&s.network_data_base64),
                    network_data_secret_ref: s
                        .network_data_secret_ref
                        .as_ref()
                        .map(|r| r.name.as_str()),
                }
            }
        }
    )+};
}

data_fields_from!(CloudInitNoCloudSource, CloudInitConfigDriveSource);

/// User data and network data with every source resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudInitData {
    /// The user data (empty when only network data was given).
    pub user_data: Vec<u8>,
    /// The network data, when any was given.
    pub network_data: Option<Vec<u8>>,
}

/// One datum's three possible fields, with their names for messages.
struct Datum<'a> {
    raw: (&'static str, Option<&'a str>),
    base64: (&'static str, Option<&'a str>),
    secret: (&'static str, Option<&'a str>),
    keys: &'static [&'static str],
}

impl Datum<'_> {
    fn resolve(
        &self,
        path: &str,
        secrets: &impl SecretSource,
    ) -> Result<Option<Vec<u8>>, CloudInitError> {
        let given: Vec<&str> = [self.raw, self.base64, self.secret]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(name, _)| *name)
            .collect();
        if given.len() > 1 {
            return Err(CloudInitError::ConflictingSources {
                path: path.to_owned(),
                fields: given.join(", "),
            });
        }
        if let (_, Some(raw)) = self.raw {
            return Ok(Some(raw.as_bytes().to_vec()));
        }
        if let (field, Some(encoded)) = self.base64 {
            return decode_base64(encoded).map(Some).map_err(|source| {
                CloudInitError::InvalidBase64 {
                    path: format!("{path}.{field}"),
                    source,
                }
            });
        }
        if let (field, Some(name)) = self.secret {
            return read_secret(secrets, name, self.keys, &format!("{path}.{field}")).map(Some);
        }
        Ok(None)
    }
}

/// Resolves the data fields of the volume source at `path` (e.g.
/// `spec.volumes[0].cloudInitNoCloud`). At most one source per datum; at least one datum.
pub fn resolve(
    fields: DataFields<'_>,
    path: &str,
    secrets: &impl SecretSource,
) -> Result<CloudInitData, CloudInitError> {
    let user = Datum {
        raw: ("userData", fields.user_data),
        base64: ("userDataBase64", fields.user_data_base64),
        secret: ("secretRef", fields.secret_ref),
        keys: USER_DATA_KEYS,
    }
    .resolve(path, secrets)?;
    let network = Datum {
        raw: ("networkData", fields.network_data),
        base64: ("networkDataBase64", fields.network_data_base64),
        secret: ("networkDataSecretRef", fields.network_data_secret_ref),
        keys: NETWORK_DATA_KEYS,
    }
    .resolve(path, secrets)?;
    if user.is_none() && network.is_none() {
        return Err(CloudInitError::NoData {
            path: path.to_owned(),
        });
    }
    Ok(CloudInitData {
        user_data: user.unwrap_or_default(),
        network_data: network,
    })
}

/// Standard base64 with padding; line breaks are ignored, as Go's decoder ignores them.
fn decode_base64(encoded: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let compact: String = encoded
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    STANDARD.decode(compact)
}

fn read_secret(
    secrets: &impl SecretSource,
    name: &str,
    keys: &'static [&'static str],
    path: &str,
) -> Result<Vec<u8>, CloudInitError> {
    for key in keys {
        match secrets.lookup(name, key) {
            Err(_) => {
                return Err(CloudInitError::MissingSecret {
                    path: path.to_owned(),
                    name: name.to_owned(),
                });
            }
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
        }
    }
    Err(CloudInitError::MissingSecretKey {
        path: path.to_owned(),
        name: name.to_owned(),
        keys,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cloudinit::secrets::NoSecrets;

    const PATH: &str = "spec.volumes[1].cloudInitNoCloud";

    #[test]
    fn inline_user_data() {
        let fields = DataFields {
            user_data: Some("#cloud-config\n"),
            ..DataFields::default()
        };
        let data = resolve(fields, PATH, &NoSecrets).unwrap();
        assert_eq!(data.user_data, b"#cloud-config\n");
        assert_eq!(data.network_data, None);
    }

    #[test]
    fn base64_user_and_network_data() {
        let fields = DataFields {
            user_data_base64: Some("aGVsbG8=\n"),
            network_data_base64: Some("dmVyc2lvbjogMg=="),
            ..DataFields::default()
        };
        let data = resolve(fields, PATH, &NoSecrets).unwrap();
        assert_eq!(data.user_data, b"hello");
        assert_eq!(data.network_data.as_deref(), Some(&b"version: 2"[..]));
    }

    #[test]
    fn invalid_base64_names_the_field() {
        let fields = DataFields {
            user_data_base64: Some("not base64!"),
            ..DataFields::default()
        };
        let err = resolve(fields, PATH, &NoSecrets).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("spec.volumes[1].cloudInitNoCloud.userDataBase64: not valid base64"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_read_by_key() {
        let secrets = BTreeMap::from([
            (
                "ud".to_owned(),
                BTreeMap::from([("userData".to_owned(), b"from secret".to_vec())]),
            ),
            ("empty".to_owned(), BTreeMap::new()),
        ]);
        let fields = DataFields {
            secret_ref: Some("ud"),
            ..DataFields::default()
        };
        assert_eq!(
            resolve(fields, PATH, &secrets).unwrap().user_data,
            b"from secret"
        );

        let missing = DataFields {
            network_data_secret_ref: Some("nope"),
            ..DataFields::default()
        };
        assert_eq!(
            resolve(missing, PATH, &secrets).unwrap_err().to_string(),
            "spec.volumes[1].cloudInitNoCloud.networkDataSecretRef: secret \"nope\" not found"
        );

        let no_key = DataFields {
            network_data_secret_ref: Some("empty"),
            ..DataFields::default()
        };
        assert_eq!(
            resolve(no_key, PATH, &secrets).unwrap_err().to_string(),
            "spec.volumes[1].cloudInitNoCloud.networkDataSecretRef: secret \"empty\" has none \
             of the keys [\"networkdata\", \"networkData\"]"
        );
    }

    #[test]
    fn conflicting_sources() {
        let fields = DataFields {
            user_data: Some("a"),
            user_data_base64: Some("YQ=="),
            ..DataFields::default()
        };
        assert_eq!(
            resolve(fields, PATH, &NoSecrets).unwrap_err().to_string(),
            "spec.volumes[1].cloudInitNoCloud: only one of userData, userDataBase64 may be set"
        );
    }

    #[test]
    fn nothing_given() {
        assert!(matches!(
            resolve(DataFields::default(), PATH, &NoSecrets),
            Err(CloudInitError::NoData { .. })
        ));
    }

    #[test]
    fn network_data_only() {
        let fields = DataFields {
            network_data: Some("version: 2\n"),
            ..DataFields::default()
        };
        let data = resolve(fields, PATH, &NoSecrets).unwrap();
        assert!(data.user_data.is_empty());
        assert!(data.network_data.is_some());
    }
}
