//! What `kubevirt-local up` installs for snapshots (the external-snapshotter's CRDs, which a real
//! cluster's snapshot add-on installs) and the default VolumeSnapshotClass of the local volumes.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use kubevirt_api::volumesnapshot::v1::VolumeSnapshotClass;
use kubevirt_api::volumesnapshot::volume_snapshot_crds;
use serde_json::json;

use crate::volumes::default_class::LOCAL_PROVISIONER;

/// The default VolumeSnapshotClass's name.
pub const LOCAL_SNAPSHOT_CLASS: &str = "local";

/// How long the CRDs may take to be established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The class as `up` makes it: our driver, Delete, the driver's default.
pub fn local_snapshot_class() -> serde_json::Value {
    json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
        "metadata": {"name": LOCAL_SNAPSHOT_CLASS,
            "annotations": {kubevirt_api::volumesnapshot::IS_DEFAULT_CLASS: "true"}},
        "driver": LOCAL_PROVISIONER,
        "deletionPolicy": "Delete"})
}

/// Why the snapshot API could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The API server refused a request.
    #[error("installing {what}: {source}")]
    Api {
        /// What was being installed.
        what: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A CRD was not established in time.
    #[error("the CRD {0} was not established within 30s")]
    NotEstablished(String),
}

/// Creates the snapshot CRDs that are missing (a cluster's own are kept) and waits until they
/// serve, then the `local` VolumeSnapshotClass unless a class of that name exists.
pub async fn ensure_snapshot_api(client: &Client) -> Result<(), InstallError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in volume_snapshot_crds() {
        let name = crd.name_any();
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => return Err(InstallError::Api { what: name, source }),
        }
    }
    let names: Vec<String> = volume_snapshot_crds()
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    kubevirt_controller::install::wait_established(&crds, &names, ESTABLISH_TIMEOUT)
        .await
        .map_err(|e| match e {
            kubevirt_controller::install::InstallError::Api { name, source } => {
                InstallError::Api { what: name, source }
            }
            kubevirt_controller::install::InstallError::NotEstablished(name) => {
                InstallError::NotEstablished(name)
            }
        })?;
    let classes: Api<VolumeSnapshotClass> = Api::all(client.clone());
    let class: VolumeSnapshotClass =
        serde_json::from_value(local_snapshot_class()).map_err(|e| InstallError::Api {
            what: LOCAL_SNAPSHOT_CLASS.into(),
            source: kube::Error::SerdeError(e),
        })?;
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(source) => Err(InstallError::Api {
            what: format!("the VolumeSnapshotClass {LOCAL_SNAPSHOT_CLASS}"),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_is_the_local_drivers_default() {
        let c: VolumeSnapshotClass = serde_json::from_value(local_snapshot_class()).unwrap();
        assert!(c.is_default());
        assert_eq!(c.spec.driver, LOCAL_PROVISIONER);
        assert_eq!(
            c.spec.deletion_policy,
            kubevirt_api::volumesnapshot::v1::DeletionPolicy::Delete
        );
    }
}
