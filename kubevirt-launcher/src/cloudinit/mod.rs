//! The disks cloud-init reads (upstream's `pkg/cloud-init` and the ISO step of virt-launcher).
//!
//! A VMI's `cloudInitNoCloud` or `cloudInitConfigDrive` volume becomes an ISO 9660 image the
//! VMM attaches as a read-only disk:
//!
//! - [`NoCloud`]: labelled `cidata`, with `meta-data`, `user-data` and `network-config`.
//! - [`ConfigDrive`]: labelled `config-2`, with `openstack/latest/meta_data.json`, `user_data`
//!   and `network_data.json`.
//!
//! User and network data come inline, as base64 or from a secret; secrets are resolved by the
//! caller through a [`SecretSource`], so this module does no I/O. The image itself is written
//! in Rust by [`iso9660`] (no `genisoimage` at run time), deterministically.
//!
//! SSH keys that `accessCredentials` propagate by `noCloud` or `configDrive` go into the
//! metadata's public keys ([`from_vmi`] does it). Not done yet: the `devices` metadata (device
//! role tags) and `instance-type` from the instance type annotations.

mod access_credentials;
mod configdrive;
mod error;
mod identity;
pub mod iso9660;
mod nocloud;
mod secrets;
mod source;

pub use access_credentials::{Propagation, public_keys};
pub use configdrive::{CONFIG_DRIVE_VOLUME_ID, ConfigDrive, ConfigDriveMetadata};
pub use error::CloudInitError;
pub use identity::VmiIdentity;
pub use nocloud::{NOCLOUD_VOLUME_ID, NoCloud, NoCloudMetadata};
pub use secrets::{NETWORK_DATA_KEYS, NoSecrets, NoSuchSecret, SecretSource, USER_DATA_KEYS};
pub use source::{CloudInitData, DataFields, resolve};

use kubevirt_api::core::v1::VirtualMachineInstance;

/// The cloud-init disk of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudInitDisk {
    /// From a `cloudInitNoCloud` volume.
    NoCloud(NoCloud),
    /// From a `cloudInitConfigDrive` volume.
    ConfigDrive(ConfigDrive),
}

/// A VMI's cloud-init volume, ready to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudInitVolume {
    /// The volume's name (the disk that attaches it has the same name).
    pub volume_name: String,
    /// The disk's contents.
    pub disk: CloudInitDisk,
}

impl CloudInitDisk {
    /// The ISO image.
    pub fn to_iso(&self) -> Result<Vec<u8>, iso9660::IsoError> {
        match self {
            CloudInitDisk::NoCloud(d) => d.to_iso(),
            CloudInitDisk::ConfigDrive(d) => d.to_iso(),
        }
    }

    /// The volume label: `cidata` or `config-2`.
    pub fn volume_id(&self) -> &'static str {
        match self {
            CloudInitDisk::NoCloud(_) => NOCLOUD_VOLUME_ID,
            CloudInitDisk::ConfigDrive(_) => CONFIG_DRIVE_VOLUME_ID,
        }
    }
}

/// The cloud-init volume of `vmi`, if it has one. Errors name the field, e.g.
/// `spec.volumes[1].cloudInitNoCloud.userDataBase64: not valid base64 (...)`. A VMI may have
/// at most one cloud-init volume. SSH keys from `spec.accessCredentials` are added to the
/// metadata of the matching kind.
pub fn from_vmi(
    vmi: &VirtualMachineInstance,
    secrets: &impl SecretSource,
) -> Result<Option<CloudInitVolume>, CloudInitError> {
    let identity = VmiIdentity::from_vmi(vmi);
    let credentials = vmi.spec.access_credentials.as_deref().unwrap_or_default();
    let mut found: Option<(String, CloudInitVolume)> = None;
    for (i, volume) in vmi.spec.volumes.iter().flatten().enumerate() {
        let (path, disk) = if let Some(source) = &volume.cloud_init_no_cloud {
            let path = format!("spec.volumes[{i}].cloudInitNoCloud");
            let mut disk = NoCloud::from_source(source, &path, &identity, secrets)?;
            disk.meta_data.public_keys = public_keys(credentials, Propagation::NoCloud, secrets)?;
            (path, CloudInitDisk::NoCloud(disk))
        } else if let Some(source) = &volume.cloud_init_config_drive {
            let path = format!("spec.volumes[{i}].cloudInitConfigDrive");
            let mut disk = ConfigDrive::from_source(source, &path, &identity, secrets)?;
            disk.meta_data.public_keys =
                public_keys(credentials, Propagation::ConfigDrive, secrets)?;
            (path, CloudInitDisk::ConfigDrive(disk))
        } else {
            continue;
        };
        if let Some((first, _)) = &found {
            return Err(CloudInitError::MultipleVolumes {
                path,
                first: first.clone(),
            });
        }
        found = Some((
            path,
            CloudInitVolume {
                volume_name: volume.name.clone(),
                disk,
            },
        ));
    }
    Ok(found.map(|(_, v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubevirt_api::core::v1::{
        CloudInitConfigDriveSource, CloudInitNoCloudSource, VirtualMachineInstanceSpec, Volume,
    };

    fn vmi(volumes: Vec<Volume>) -> VirtualMachineInstance {
        let mut vmi = VirtualMachineInstance::new(
            "vm",
            VirtualMachineInstanceSpec {
                volumes: Some(volumes),
                ..Default::default()
            },
        );
        vmi.metadata.namespace = Some("ns".to_owned());
        vmi.metadata.uid = Some("uid-1".to_owned());
        vmi
    }

    fn no_cloud(name: &str, source: CloudInitNoCloudSource) -> Volume {
        Volume {
            name: name.to_owned(),
            cloud_init_no_cloud: Some(source),
            ..Default::default()
        }
    }

    #[test]
    fn finds_the_volume() {
        let vmi = vmi(vec![
            Volume {
                name: "root".to_owned(),
                ..Default::default()
            },
            no_cloud(
                "cloudinit",
                CloudInitNoCloudSource {
                    user_data: Some("#cloud-config\n".to_owned()),
                    ..Default::default()
                },
            ),
        ]);
        let volume = from_vmi(&vmi, &NoSecrets).unwrap().unwrap();
        assert_eq!(volume.volume_name, "cloudinit");
        assert_eq!(volume.disk.volume_id(), "cidata");
        let CloudInitDisk::NoCloud(disk) = &volume.disk else {
            panic!("expected NoCloud");
        };
        assert_eq!(disk.meta_data.instance_id, "vm.ns");
        assert!(volume.disk.to_iso().is_ok());
    }

    #[test]
    fn none_without_cloud_init() {
        assert_eq!(from_vmi(&vmi(vec![]), &NoSecrets), Ok(None));
    }

    #[test]
    fn errors_name_the_volume_path() {
        let vmi = vmi(vec![
            Volume {
                name: "root".to_owned(),
                ..Default::default()
            },
            no_cloud(
                "ci",
                CloudInitNoCloudSource {
                    user_data_base64: Some("%%%".to_owned()),
                    ..Default::default()
                },
            ),
        ]);
        let err = from_vmi(&vmi, &NoSecrets).unwrap_err().to_string();
        assert!(
            err.starts_with("spec.volumes[1].cloudInitNoCloud.userDataBase64: not valid base64"),
            "{err}"
        );
    }

    #[test]
    fn only_one_cloud_init_volume() {
        let vmi = vmi(vec![
            no_cloud(
                "a",
                CloudInitNoCloudSource {
                    user_data: Some("x".to_owned()),
                    ..Default::default()
                },
            ),
            Volume {
                name: "b".to_owned(),
                cloud_init_config_drive: Some(CloudInitConfigDriveSource {
                    user_data: Some("x".to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        assert_eq!(
            from_vmi(&vmi, &NoSecrets).unwrap_err().to_string(),
            "spec.volumes[1].cloudInitConfigDrive: only one cloudInitNoCloud or \
             cloudInitConfigDrive volume is allowed, spec.volumes[0].cloudInitNoCloud is one already"
        );
    }

    #[test]
    fn access_credential_keys_reach_the_config_drive() {
        let mut vmi = vmi(vec![Volume {
            name: "cd".to_owned(),
            cloud_init_config_drive: Some(CloudInitConfigDriveSource {
                user_data: Some("x".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        vmi.spec.access_credentials = Some(
            serde_json::from_value(serde_json::json!([{
                "sshPublicKey": {
                    "source": {"secret": {"secretName": "my-keys"}},
                    "propagationMethod": {"configDrive": {}}
                }
            }]))
            .unwrap(),
        );
        let secrets = std::collections::BTreeMap::from([(
            "my-keys".to_owned(),
            std::collections::BTreeMap::from([("key1".to_owned(), b"ssh-ed25519 AAA".to_vec())]),
        )]);
        let volume = from_vmi(&vmi, &secrets).unwrap().unwrap();
        let CloudInitDisk::ConfigDrive(drive) = &volume.disk else {
            panic!("expected ConfigDrive");
        };
        assert_eq!(
            drive.meta_data.public_keys.get("0").map(String::as_str),
            Some("ssh-ed25519 AAA")
        );
        let json = String::from_utf8(drive.meta_data_bytes()).unwrap();
        assert!(
            json.ends_with(r#""public_keys":{"0":"ssh-ed25519 AAA"}}"#),
            "{json}"
        );
    }
}
