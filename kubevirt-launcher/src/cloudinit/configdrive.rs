//! The ConfigDrive data source (OpenStack config drive v2): an ISO labelled `config-2` with
//! `openstack/latest/meta_data.json`, `openstack/latest/user_data` and, when given,
//! `openstack/latest/network_data.json`.

use std::collections::BTreeMap;

use kubevirt_api::core::v1::CloudInitConfigDriveSource;
use serde::Serialize;

use super::error::CloudInitError;
use super::identity::VmiIdentity;
use super::iso9660::{IsoError, IsoFile, IsoImage};
use super::secrets::SecretSource;
use super::source::{CloudInitData, DataFields, resolve};

/// The label cloud-init's ConfigDrive source looks for.
pub const CONFIG_DRIVE_VOLUME_ID: &str = "config-2";

/// Where the files live on the drive.
const DIR: &str = "openstack/latest";

/// `meta_data.json`, like upstream's `ConfigDriveMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigDriveMetadata {
    /// `instance_id`: `<name>.<namespace>`.
    pub instance_id: String,
    /// `hostname`: `spec.hostname`, or the VMI name.
    pub hostname: String,
    /// `name`: the VMI name.
    pub name: String,
    /// `uuid`: the VMI's `metadata.uid`.
    pub uuid: String,
    /// `public_keys`: SSH keys propagated by `accessCredentials` with the `configDrive`
    /// method, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub public_keys: BTreeMap<String, String>,
}

/// The contents of a config drive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDrive {
    /// `openstack/latest/meta_data.json`.
    pub meta_data: ConfigDriveMetadata,
    /// `openstack/latest/user_data` (written even when empty).
    pub user_data: Vec<u8>,
    /// `openstack/latest/network_data.json`, when network data was given.
    pub network_data: Option<Vec<u8>>,
}

impl ConfigDrive {
    /// The drive for the `cloudInitConfigDrive` source at `path` (e.g.
    /// `spec.volumes[1].cloudInitConfigDrive`) of the VMI `vmi`, with secret references
    /// resolved through `secrets`.
    pub fn from_source(
        source: &CloudInitConfigDriveSource,
        path: &str,
        vmi: &VmiIdentity,
        secrets: &impl SecretSource,
    ) -> Result<ConfigDrive, CloudInitError> {
        let CloudInitData {
            user_data,
            network_data,
        } = resolve(DataFields::from(source), path, secrets)?;
        Ok(ConfigDrive {
            meta_data: ConfigDriveMetadata {
                instance_id: vmi.instance_id(),
                hostname: vmi.hostname(),
                name: vmi.name.clone(),
                uuid: vmi.uid.clone(),
                public_keys: BTreeMap::new(),
            },
            user_data,
            network_data,
        })
    }

    /// The `meta_data.json` file's bytes.
    pub fn meta_data_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings cannot fail.
        serde_json::to_vec(&self.meta_data).unwrap_or_default()
    }

    /// The files of the drive, at their paths.
    pub fn files(&self) -> Vec<IsoFile> {
        let mut files = vec![
            IsoFile::new(format!("{DIR}/meta_data.json"), self.meta_data_bytes()),
            IsoFile::new(format!("{DIR}/user_data"), self.user_data.clone()),
        ];
        if let Some(network) = &self.network_data {
            files.push(IsoFile::new(
                format!("{DIR}/network_data.json"),
                network.clone(),
            ));
        }
        files
    }

    /// The ISO image labelled `config-2`.
    pub fn to_iso(&self) -> Result<Vec<u8>, IsoError> {
        IsoImage {
            files: self.files(),
            ..IsoImage::new(CONFIG_DRIVE_VOLUME_ID)
        }
        .to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudinit::secrets::NoSecrets;

    #[test]
    fn metadata_and_paths() {
        let vmi = VmiIdentity {
            name: "vm".to_owned(),
            namespace: "ns".to_owned(),
            uid: "6e0e2b1a".to_owned(),
            hostname: Some("h".to_owned()),
        };
        let source = CloudInitConfigDriveSource {
            user_data_base64: Some("I2Nsb3VkLWNvbmZpZwo=".to_owned()),
            network_data: Some("{}".to_owned()),
            ..Default::default()
        };
        let drive = ConfigDrive::from_source(&source, "v", &vmi, &NoSecrets).unwrap();
        assert_eq!(
            String::from_utf8(drive.meta_data_bytes()).unwrap(),
            r#"{"instance_id":"vm.ns","hostname":"h","name":"vm","uuid":"6e0e2b1a"}"#
        );
        let files = drive.files();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "openstack/latest/meta_data.json",
                "openstack/latest/user_data",
                "openstack/latest/network_data.json"
            ]
        );
        assert_eq!(files[1].data, b"#cloud-config\n");
    }

    #[test]
    fn image_is_labelled_config_2() {
        let iso = ConfigDrive::default().to_iso().unwrap();
        assert_eq!(&iso[16 * 2048 + 40..16 * 2048 + 48], b"config-2");
    }
}
