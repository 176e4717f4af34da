//! Installs the KubeVirt CRDs on a cluster (creating or updating each), as `kubevirt-controller
//! crds | kubectl apply -f -` would, and waits until the API server serves them.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use kubevirt_api::crd::CrdOptions;
use kubevirt_api::object::all_crds;

/// How long a CRD may take to become Established.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors installing the CRDs.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The API server refused a CRD.
    #[error("installing customresourcedefinition {name}: {source}")]
    Api {
        /// The CRD.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A CRD was not Established in time.
    #[error("customresourcedefinition {0} is not Established after {ESTABLISH_TIMEOUT:?}")]
    NotEstablished(String),
}

/// Creates every CRD that is missing and replaces every one that differs; returns how many
/// were created or updated. Then waits until all are Established.
pub async fn ensure_crds(client: &Client) -> Result<usize, InstallError> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut changed = 0;
    for mut crd in all_crds(&CrdOptions::default()) {
        let name = crd.name_any();
        let err = |source| InstallError::Api {
            name: name.clone(),
            source,
        };
        match api.get_opt(&name).await.map_err(err)? {
            None => {
                api.create(&PostParams::default(), &crd)
                    .await
                    .map_err(err)?;
                changed += 1;
            }
            Some(existing) if existing.spec != crd.spec => {
                crd.metadata.resource_version = existing.metadata.resource_version.clone();
                api.replace(&name, &PostParams::default(), &crd)
                    .await
                    .map_err(err)?;
                changed += 1;
            }
            Some(_) => {}
        }
    }
    let names: Vec<String> = all_crds(&CrdOptions::default())
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    wait_established(&api, &names, ESTABLISH_TIMEOUT).await?;
    Ok(changed)
}

/// Waits until every CRD in `names` is Established (the API server serves its kind), for at
/// most `timeout` in all.
pub async fn wait_established(
    api: &Api<CustomResourceDefinition>,
    names: &[String],
    timeout: Duration,
) -> Result<(), InstallError> {
    let deadline = tokio::time::Instant::now() + timeout;
    for name in names {
        loop {
            let current = api.get(name).await.map_err(|source| InstallError::Api {
                name: name.clone(),
                source,
            })?;
            let established = current
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(InstallError::NotEstablished(name.clone()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
