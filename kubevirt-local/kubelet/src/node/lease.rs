//! The node's heartbeat: a `Lease` named after the node in `kube-node-lease`, renewed every
//! 10 s (upstream's `nodeLeaseDurationSeconds` is 40).

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::status::NodeError;

/// Where node leases live.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Creates or renews `node`'s lease (and its namespace, the first time).
pub async fn renew_lease(
    client: &kube::Client,
    node: &str,
    node_uid: &str,
) -> Result<(), NodeError> {
    let now = jiff::Timestamp::now().to_string();
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let patch =
        json!({"spec": {"renewTime": now, "holderIdentity": node, "leaseDurationSeconds": 40}});
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(NodeError::Api("renewing the node lease", Box::new(e))),
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": LEASE_NAMESPACE}}))
        .map_err(NodeError::Json)?;
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => {
            return Err(NodeError::Api(
                "creating the kube-node-lease namespace",
                Box::new(e),
            ));
        }
    }
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": node, "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": now},
    }))
    .map_err(NodeError::Json)?;
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(NodeError::Api("creating the node lease", Box::new(e))),
    }
}
