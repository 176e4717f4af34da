//! Removing an install when its `KubeVirt` CR is deleted: with `uninstallStrategy:
//! BlockUninstallIfWorkloadsExist` (upstream's default) nothing is removed while a
//! VirtualMachine or VirtualMachineInstance exists, with upstream's words for why; otherwise
//! (or once none exist) every component object, the certificates and the CRDs go.
//!
//! Upstream refuses the delete request itself in virt-operator's validating webhook
//! (`kubevirt-update-validator`), so the CR is never marked deleted; the API server this project
//! ships has no admission webhooks, so here the deletion is held by the finalizer instead and
//! the refusal is a condition.

use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance};
use serde_json::{Value, json};

use super::apply::{ApplyError, api_for, crd_names};
use super::components::{self, Install};
use super::secrets;

/// Upstream's refusal when VMIs exist.
pub const VMIS_PRESENT: &str = "there are still Virtual Machine Instances present";
/// Its refusal when VMs exist.
pub const VMS_PRESENT: &str = "there are still Virtual Machines present";

/// Whether `strategy` (`spec.uninstallStrategy`) keeps everything while workloads exist.
pub fn blocks(strategy: Option<&str>) -> bool {
    strategy.unwrap_or_default() != "RemoveWorkloads"
}

async fn any<K>(api: Api<K>) -> Result<bool, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(l) => Ok(!l.items.is_empty()),
        // The CRD is gone: nothing of that kind exists.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why the install may not be removed yet, if workloads exist anywhere.
pub async fn workloads_present(client: &Client) -> Result<Option<&'static str>, kube::Error> {
    if any(Api::<VirtualMachineInstance>::all(client.clone())).await? {
        return Ok(Some(VMIS_PRESENT));
    }
    if any(Api::<VirtualMachine>::all(client.clone())).await? {
        return Ok(Some(VMS_PRESENT));
    }
    Ok(None)
}

/// Everything the install consists of, as `(apiVersion, kind, namespace, name)` stubs: the
/// components' objects, the certificates and the CRDs (last).
pub fn objects(install: &Install) -> Vec<Value> {
    let mut out: Vec<Value> = components::desired(install, None)
        .into_iter()
        .map(|o| {
            json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": {
            "name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"]}})
        })
        .collect();
    for (kind, name) in secrets::kept() {
        out.push(json!({"apiVersion": "v1", "kind": kind,
            "metadata": {"name": name, "namespace": install.namespace}}));
    }
    for name in crd_names() {
        out.push(json!({"apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition", "metadata": {"name": name}}));
    }
    out
}

/// Deletes every object of the install that still exists; true when none is left.
pub async fn remove(client: &Client, install: &Install) -> Result<bool, ApplyError> {
    let mut left = 0;
    for stub in objects(install) {
        let api = api_for(client, &stub)?;
        let name = stub["metadata"]["name"].as_str().unwrap_or_default();
        let err = |source| ApplyError::Api {
            kind: stub["kind"].as_str().unwrap_or_default().into(),
            name: name.into(),
            source,
        };
        match api.get_opt(name).await {
            Ok(Some(o)) => {
                left += 1;
                if o.metadata.deletion_timestamp.is_none() {
                    match api.delete(&o.name_any(), &DeleteParams::background()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(err(e)),
                    }
                }
            }
            Ok(None) => {}
            // A kind the cluster does not serve (APIServices without an aggregator): nothing there.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(left == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::components::tests::install;

    #[test]
    fn only_remove_workloads_skips_the_check() {
        assert!(blocks(None));
        assert!(blocks(Some("")));
        assert!(blocks(Some("BlockUninstallIfWorkloadsExist")));
        assert!(!blocks(Some("RemoveWorkloads")));
    }

    #[test]
    fn removal_covers_components_certificates_and_crds_last() {
        let all = objects(&install());
        let has = |kind: &str, name: &str| {
            all.iter()
                .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        };
        assert!(has("Deployment", "virt-api"));
        assert!(has("DaemonSet", "virt-handler"));
        assert!(has("Secret", "kubevirt-ca"));
        assert!(has("APIService", "v1.subresources.kubevirt.io"));
        assert!(has(
            "CustomResourceDefinition",
            "virtualmachines.kubevirt.io"
        ));
        assert!(!has("CustomResourceDefinition", "kubevirts.kubevirt.io"));
        assert_eq!(all.last().unwrap()["kind"], "CustomResourceDefinition");
    }
}
