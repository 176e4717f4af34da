//! Applying an install: every object by server-side apply with field manager `virt-operator`
//! (forced: the operator owns what it installs, and a hand edit is put back), the CRDs first
//! (waited for until Established), then the certificates, the RBAC and the components.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use kubevirt_api::crd::CrdOptions;
use kubevirt_api::object::all_crds;
use serde_json::{Value, json};

use super::components::{self, IDENTIFIER_ANNOTATION, Install, MANAGER, api, controller, handler};
use super::secrets;
use super::workload::Workload;

/// How long CRDs may take to become Established within one reconcile.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors applying an install.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused an object.
    #[error("applying {kind} {name}: {}", brief(source))]
    Api {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A built object has a kind the operator does not know how to address (a bug).
    #[error("applying {kind} {name}: unknown kind")]
    UnknownKind {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// The CRDs were not served in time.
    #[error(transparent)]
    Crds(#[from] crate::install::InstallError),
    /// The certificates could not be made or kept.
    #[error(transparent)]
    Certificates(#[from] secrets::SecretError),
}

/// The API server's own message for a refusal (kube's rendering repeats it with the whole
/// Status).
pub fn brief(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        e => e.to_string(),
    }
}

/// The plural and scope of each kind the builders make.
fn resource(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (plural, namespaced) = match kind {
        "ServiceAccount" => ("serviceaccounts", true),
        "Service" => ("services", true),
        "Secret" => ("secrets", true),
        "ConfigMap" => ("configmaps", true),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "Deployment" => ("deployments", true),
        "DaemonSet" => ("daemonsets", true),
        "APIService" => ("apiservices", false),
        "CustomResourceDefinition" => ("customresourcedefinitions", false),
        _ => return None,
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

/// The API of `object`'s kind, in its namespace if it has one.
pub fn api_for(client: &Client, object: &Value) -> Result<Api<DynamicObject>, ApplyError> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let Some((ar, namespaced)) = resource(object["apiVersion"].as_str().unwrap_or_default(), kind)
    else {
        return Err(ApplyError::UnknownKind {
            kind: kind.into(),
            name: name.into(),
        });
    };
    Ok(match object["metadata"]["namespace"].as_str() {
        Some(ns) if namespaced => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    })
}

/// Server-side applies `object` as `virt-operator`.
pub async fn apply(client: &Client, object: &Value) -> Result<(), ApplyError> {
    let api = api_for(client, object)?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| ApplyError::Api {
        kind: object["kind"].as_str().unwrap_or_default().into(),
        name: name.into(),
        source,
    })?;
    Ok(())
}

/// Every KubeVirt CRD but `KubeVirt` itself (kubevirt-operator.yaml creates that one), labelled
/// as the install's.
pub fn crds(install: &Install) -> Vec<Value> {
    all_crds(&CrdOptions::default())
        .into_iter()
        .filter(|c| c.spec.names.kind != "KubeVirt")
        .filter_map(|c| serde_json::to_value(c).ok())
        .map(|mut c| {
            let name = c["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let meta = install.metadata(&name, false, "virt-operator");
            c["metadata"]["labels"] = meta["labels"].clone();
            c["metadata"]["annotations"] = meta["annotations"].clone();
            c["apiVersion"] = json!("apiextensions.k8s.io/v1");
            c["kind"] = json!("CustomResourceDefinition");
            c
        })
        .collect()
}

/// Whether the cluster serves APIServices (a real cluster's aggregator does, and so does
/// kubevirt-local's API server; a bare API server without aggregation has none).
pub async fn serves_apiservices(client: &Client) -> bool {
    client
        .list_api_group_resources("apiregistration.k8s.io/v1")
        .await
        .is_ok_and(|l| l.resources.iter().any(|r| r.name == "apiservices"))
}

/// Applies the whole install and reads back its workloads.
pub async fn install(client: &Client, install: &Install) -> Result<Vec<Workload>, ApplyError> {
    let crds = crds(install);
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for crd in &crds {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // The CRDs are large: one already applied for this install is left as it is.
        let current = crd_api
            .get_opt(&name)
            .await
            .map_err(|source| ApplyError::Api {
                kind: "CustomResourceDefinition".into(),
                name: name.clone(),
                source,
            })?;
        let applied = current.is_some_and(|c| {
            c.annotations().get(IDENTIFIER_ANNOTATION) == Some(&install.identifier())
        });
        if !applied {
            apply(client, crd).await?;
        }
        names.push(name);
    }
    crate::install::wait_established(&crd_api, &names, ESTABLISH_TIMEOUT).await?;
    let ca = secrets::ensure(client, install).await?;
    let apiservices = serves_apiservices(client).await;
    static WARNED: std::sync::Once = std::sync::Once::new();
    if !apiservices {
        WARNED.call_once(|| {
            tracing::warn!(
                "the cluster serves no apiregistration.k8s.io/v1 APIServices: virt-api's are not installed"
            )
        });
    }
    for object in components::desired(install, Some(&ca)) {
        if object["kind"] == "APIService" && !apiservices {
            continue;
        }
        apply(client, &object).await?;
    }
    workloads(client, &install.namespace).await
}

/// The components' workloads as they are now.
pub async fn workloads(client: &Client, namespace: &str) -> Result<Vec<Workload>, ApplyError> {
    let err = |kind: &str, name: &str| {
        let (kind, name) = (kind.to_string(), name.to_string());
        move |source| ApplyError::Api { kind, name, source }
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods_of = |component: &'static str| {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels(&format!("kubevirt.io={component}")))
                .await
                .map(|l| l.items)
                .map_err(err("Pod", component))
        }
    };
    let mut out = Vec::new();
    for name in [api::NAME, controller::NAME] {
        let d = deployments
            .get(name)
            .await
            .map_err(err("Deployment", name))?;
        out.push(Workload::deployment(&d).with_pods(&pods_of(name).await?));
    }
    let ds = daemonsets
        .get(handler::NAME)
        .await
        .map_err(err("DaemonSet", handler::NAME))?;
    out.push(Workload::daemonset(&ds).with_pods(&pods_of(handler::NAME).await?));
    Ok(out)
}

/// The names of the install's CRDs.
pub fn crd_names() -> Vec<String> {
    all_crds(&CrdOptions::default())
        .into_iter()
        .filter(|c| c.spec.names.kind != "KubeVirt")
        .map(|c| c.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::components::tests::install;

    #[test]
    fn every_built_kind_is_addressable_and_the_kubevirt_crd_is_left_alone() {
        for o in components::desired(&install(), Some("CA")) {
            let kind = o["kind"].as_str().unwrap();
            assert!(
                resource(o["apiVersion"].as_str().unwrap(), kind).is_some(),
                "{kind}"
            );
        }
        let crds = crds(&install());
        assert!(
            crds.iter()
                .all(|c| c["metadata"]["name"] != "kubevirts.kubevirt.io")
        );
        assert!(
            crds.iter()
                .any(|c| c["metadata"]["name"] == "virtualmachines.kubevirt.io")
        );
        assert_eq!(
            crds[0]["metadata"]["labels"][components::MANAGED_BY],
            MANAGER
        );
        assert_eq!(crds.len(), crd_names().len());
    }
}
