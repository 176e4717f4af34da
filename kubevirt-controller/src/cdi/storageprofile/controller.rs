//! Keeps a StorageProfile per StorageClass: installs the StorageProfile CRD if the cluster has
//! none, then every few seconds (and at once when a class changes) creates the profiles of new
//! classes, writes each profile's status from its class and spec ([`super::status_for`]), and
//! deletes the profiles whose class is gone.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::status_for;

/// The API group's kind as kube-rs addresses it.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: "cdi.kubevirt.io".into(),
        version: "v1beta1".into(),
        api_version: "cdi.kubevirt.io/v1beta1".into(),
        kind: "StorageProfile".into(),
        plural: "storageprofiles".into(),
    }
}

/// How often the profiles are checked when no class changes.
const RESYNC: Duration = Duration::from_secs(10);

/// The StorageProfile CRD (upstream's names, scope and status subresource; the schema keeps
/// whatever spec and status hold).
pub fn crd() -> CustomResourceDefinition {
    let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "storageprofiles.cdi.kubevirt.io",
                     "labels": {"cdi.kubevirt.io": ""}},
        "spec": {
            "group": "cdi.kubevirt.io",
            "scope": "Cluster",
            "names": {"kind": "StorageProfile", "listKind": "StorageProfileList",
                      "plural": "storageprofiles", "singular": "storageprofile"},
            "versions": [{
                "name": "v1beta1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                    "metadata": {"type": "object"}, "spec": open, "status": open}}}
            }]
        }
    }))
    .expect("the StorageProfile CRD is valid")
}

/// Runs until `shutdown` resolves; `on_sync` hears each pass's outcome.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_sync: impl Fn(Result<String, String>),
) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    match crds.create(&PostParams::default(), &crd()).await {
        Ok(_) => tracing::info!("installed the StorageProfile CRD"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => on_sync(Err(format!("installing the StorageProfile CRD: {e}"))),
    }
    let classes: Api<StorageClass> = Api::all(client.clone());
    let mut changes = watcher(classes.clone(), watcher::Config::default()).boxed();
    tokio::pin!(shutdown);
    loop {
        on_sync(sync(&client).await);
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(RESYNC) => {}
            _ = changes.next() => {}
        }
    }
}

/// One pass over every class and profile.
pub async fn sync(client: &Client) -> Result<String, String> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let profiles: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource());
    let classes = classes
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing StorageClasses: {e}"))?;
    let existing = profiles
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing StorageProfiles: {e}"))?;
    let mut changed = 0;
    for class in &classes.items {
        let Some(name) = class.metadata.name.as_deref() else {
            continue;
        };
        let current = existing
            .items
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name));
        let spec = current
            .and_then(|p| p.data.get("spec"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let status = status_for(class, &spec);
        if current.is_none() {
            let object: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "StorageProfile",
                "metadata": {"name": name, "labels": {"cdi.kubevirt.io": ""}},
                "spec": {},
            }))
            .map_err(|e| e.to_string())?;
            match profiles.create(&PostParams::default(), &object).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(format!("creating StorageProfile {name}: {e}")),
            }
        }
        if current.and_then(|p| p.data.get("status")) != Some(&status) {
            profiles
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": status})),
                )
                .await
                .map_err(|e| format!("writing the status of StorageProfile {name}: {e}"))?;
            changed += 1;
        }
    }
    for profile in &existing.items {
        let Some(name) = profile.metadata.name.as_deref() else {
            continue;
        };
        if !classes
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(name))
        {
            match profiles.delete(name, &DeleteParams::default()).await {
                Ok(_) => changed += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(format!("deleting StorageProfile {name}: {e}")),
            }
        }
    }
    Ok(format!(
        "{} StorageProfiles, {changed} changed",
        classes.items.len()
    ))
}

/// The profile of `class` as the API has it, if any.
pub async fn get(client: &Client, class: &str) -> Option<Value> {
    let profiles: Api<DynamicObject> = Api::all_with(client.clone(), &api_resource());
    let p = profiles.get_opt(class).await.ok()??;
    serde_json::to_value(p).ok()
}

/// The name of the default StorageClass, if there is one.
pub async fn default_class(client: &Client) -> Option<String> {
    let classes: Api<StorageClass> = Api::all(client.clone());
    let list = classes.list(&ListParams::default()).await.ok()?;
    list.items
        .into_iter()
        .find(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(super::DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        })
        .and_then(|c| c.metadata.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crd_is_cluster_scoped_with_a_status() {
        let c = crd();
        assert_eq!(c.spec.scope, "Cluster");
        assert_eq!(c.spec.names.plural, "storageprofiles");
        assert!(
            c.spec.versions[0]
                .subresources
                .as_ref()
                .unwrap()
                .status
                .is_some()
        );
    }
}
