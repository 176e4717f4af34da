//! The NoCloud data source: an ISO labelled `cidata` with `meta-data`, `user-data` and,
//! when given, `network-config` at its root.

use std::collections::BTreeMap;

use kubevirt_api::core::v1::CloudInitNoCloudSource;
use serde::Serialize;

use super::error::CloudInitError;
use super::identity::VmiIdentity;
use super::iso9660::{IsoError, IsoFile, IsoImage};
use super::secrets::SecretSource;
use super::source::{CloudInitData, DataFields, resolve};

/// The label cloud-init's NoCloud source looks for.
pub const NOCLOUD_VOLUME_ID: &str = "cidata";

/// The `meta-data` file, written as JSON (which is YAML too) like upstream's
/// `NoCloudMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NoCloudMetadata {
    /// `instance-id`: `<name>.<namespace>`.
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    /// `local-hostname`: `spec.hostname`, or the VMI name.
    #[serde(rename = "local-hostname", skip_serializing_if = "String::is_empty")]
    pub local_hostname: String,
    /// `public-keys`: SSH keys propagated by `accessCredentials` with the `noCloud` method,
    /// by name.
    #[serde(rename = "public-keys", skip_serializing_if = "BTreeMap::is_empty")]
    pub public_keys: BTreeMap<String, String>,
}

/// The contents of a NoCloud disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoCloud {
    /// `meta-data`.
    pub meta_data: NoCloudMetadata,
    /// `user-data` (written even when empty: cloud-init requires the file).
    pub user_data: Vec<u8>,
    /// `network-config`, when network data was given.
    pub network_config: Option<Vec<u8>>,
}

impl NoCloud {
    /// The disk for the `cloudInitNoCloud` source at `path` (e.g.
    /// `spec.volumes[1].cloudInitNoCloud`) of the VMI `vmi`, with secret references resolved
    /// through `secrets`.
    pub fn from_source(
        source: &CloudInitNoCloudSource,
        path: &str,
        vmi: &VmiIdentity,
        secrets: &impl SecretSource,
    ) -> Result<NoCloud, CloudInitError> {
        let CloudInitData {
            user_data,
            network_data,
        } = resolve(DataFields::from(source), path, secrets)?;
        Ok(NoCloud {
            meta_data: NoCloudMetadata {
                instance_id: vmi.instance_id(),
                local_hostname: vmi.hostname(),
                public_keys: BTreeMap::new(),
            },
            user_data,
            network_config: network_data,
        })
    }

    /// The `meta-data` file's bytes.
    pub fn meta_data_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings cannot fail.
        serde_json::to_vec(&self.meta_data).unwrap_or_default()
    }

    /// The files of the disk, at their paths.
    pub fn files(&self) -> Vec<IsoFile> {
        let mut files = vec![
            IsoFile::new("meta-data", self.meta_data_bytes()),
            IsoFile::new("user-data", self.user_data.clone()),
        ];
        if let Some(network) = &self.network_config {
            files.push(IsoFile::new("network-config", network.clone()));
        }
        files
    }

    /// The ISO image labelled `cidata`.
    pub fn to_iso(&self) -> Result<Vec<u8>, IsoError> {
        IsoImage {
            files: self.files(),
            ..IsoImage::new(NOCLOUD_VOLUME_ID)
        }
        .to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::secrets::NoSecrets;

    fn vmi() -> VmiIdentity {
        VmiIdentity {
            name: "testvmi".to_owned(),
            namespace: "default".to_owned(),
            uid: "1234".to_owned(),
            hostname: None,
        }
    }

    #[test]
    fn metadata_like_upstream() {
        let source = CloudInitNoCloudSource {
            user_data: Some("#cloud-config\n".to_owned()),
            ..Default::default()
        };
        let disk = NoCloud::from_source(&source, "v", &vmi(), &NoSecrets).unwrap();
        assert_eq!(
            String::from_utf8(disk.meta_data_bytes()).unwrap(),
            r#"{"instance-id":"testvmi.default","local-hostname":"testvmi"}"#
        );
        let names: Vec<String> = disk.files().into_iter().map(|f| f.path).collect();
        assert_eq!(names, ["meta-data", "user-data"]);
    }

    #[test]
    fn network_config_when_given() {
        let source = CloudInitNoCloudSource {
            network_data: Some("version: 2\n".to_owned()),
            ..Default::default()
        };
        let disk = NoCloud::from_source(&source, "v", &vmi(), &NoSecrets).unwrap();
        let files = disk.files();
        assert_eq!(files[1].data, b"");
        assert_eq!(files[2].path, "network-config");
        assert_eq!(files[2].data, b"version: 2\n");
    }

    #[test]
    fn public_keys_are_listed() {
        let mut disk = NoCloud::default();
        disk.meta_data.instance_id = "i".to_owned();
        disk.meta_data
            .public_keys
            .insert("key0".to_owned(), "ssh-ed25519 AAAA".to_owned());
        assert_eq!(
            String::from_utf8(disk.meta_data_bytes()).unwrap(),
            r#"{"instance-id":"i","public-keys":{"key0":"ssh-ed25519 AAAA"}}"#
        );
    }

    #[test]
    fn image_is_labelled_cidata() {
        let iso = NoCloud::default().to_iso().unwrap();
        assert_eq!(&iso[16 * 2048 + 40..16 * 2048 + 46], b"cidata");
    }
}
