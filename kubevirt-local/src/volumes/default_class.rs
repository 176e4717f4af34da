//! The StorageClass `kubevirt-local up` makes at start (docs/STORAGE.md): `local`, the node's
//! provisioner, WaitForFirstConsumer, Delete, expandable, the default. Made only when absent: a
//! user's changes (or its deletion's replacement) are kept.

use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The default class's name.
pub const LOCAL_CLASS: &str = "local";
/// The provisioner of kubevirt-rs's local volumes.
pub const LOCAL_PROVISIONER: &str = "kubevirt-rs.io/local-volume";

/// The class as `up` makes it.
pub fn local_class() -> serde_json::Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": LOCAL_PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": true})
}

/// Create the `local` class unless a class of that name exists.
pub async fn ensure_local_class(client: &Client) -> Result<(), kube::Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass =
        serde_json::from_value(local_class()).map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_decodes_as_a_storage_class() {
        let c: StorageClass = serde_json::from_value(local_class()).unwrap();
        assert_eq!(c.provisioner, LOCAL_PROVISIONER);
        assert_eq!(
            c.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        assert_eq!(c.allow_volume_expansion, Some(true));
    }
}
