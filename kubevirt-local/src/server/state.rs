//! The server's shared state: storage, the registry of served kinds, and settings.

use super::gc::Collector;
use super::health::Readiness;
use crate::error::ApiError;
use crate::registry::{Registry, Resource, resource_from_crd};
use crate::storage::{EventType, ObjectKey, Store};
use kubevirt_api::defaults::ClusterDefaults;
use serde_json::json;
use std::sync::{Arc, RwLock};

/// The storage name of CRDs.
pub const CRD_RESOURCE: &str = "apiextensions.k8s.io/customresourcedefinitions";
/// The storage name of namespaces.
pub const NAMESPACE_RESOURCE: &str = "/namespaces";

/// Shared server state.
#[derive(Debug)]
pub struct State {
    /// Durable storage.
    pub store: Store,
    /// Garbage collection's work list, fed by the store's changes.
    pub(super) gc: Collector,
    /// The served kinds: replaced whole when CRDs change, shared by requests without copying.
    registry: RwLock<Arc<Registry>>,
    /// Bearer token clients must present (none: no authentication, loopback debugging only).
    pub token: Option<String>,
    /// Cluster-wide KubeVirt defaults used by admission.
    pub cluster: ClusterDefaults,
    /// The address clients reach the server at (discovery's serverAddressByClientCIDRs).
    pub address: String,
    /// The gates `/readyz` waits for besides the server itself.
    pub readiness: Readiness,
    /// The subresource API (`/apis/subresources.kubevirt.io/...`), once `up` has made it.
    pub subresources: std::sync::OnceLock<axum::Router>,
    /// The upload API (`/apis/upload.cdi.kubevirt.io/...`) and upload proxy
    /// (`/cdi-upload-proxy/...`), once `up` has made them.
    pub uploads: std::sync::OnceLock<axum::Router>,
    /// API aggregation's front-proxy identity, once enabled (`up`, `apiserver`).
    pub aggregator: std::sync::OnceLock<super::aggregator::Aggregator>,
    /// The bytes all watches hold unread (each watch's buffer is bounded).
    pub watch_buffered: Arc<super::watch_buffer::Gauge>,
    /// Open watches per client (bearer token), capped.
    pub watches: Arc<super::watch_buffer::Watches>,
    /// Requests in flight, capped ([`super::inflight`]).
    pub inflight: Arc<super::inflight::Inflight>,
    /// Who client certificates speak for (a server over TLS; see [`crate::x509`]).
    pub client_certs: std::sync::OnceLock<Arc<crate::x509::ClientCertAuth>>,
    /// RBAC: the indexed view of the stored roles and bindings every request is checked against.
    pub authorizer: super::authz::Authorizer,
}

impl State {
    /// State over `store`: registers the stored CRDs and makes sure the standard namespaces exist.
    pub fn new(
        store: Store,
        token: Option<String>,
        address: String,
    ) -> Result<Arc<Self>, ApiError> {
        let state = Arc::new(Self {
            gc: Collector::new(&store),
            authorizer: super::authz::Authorizer::new(&store),
            store,
            registry: RwLock::new(Arc::new(Registry::builtin())),
            token,
            cluster: ClusterDefaults::kubevirt_rs(),
            address,
            readiness: Readiness::default(),
            subresources: std::sync::OnceLock::new(),
            uploads: std::sync::OnceLock::new(),
            aggregator: std::sync::OnceLock::new(),
            client_certs: std::sync::OnceLock::new(),
            watch_buffered: Arc::default(),
            watches: Arc::default(),
            inflight: Arc::default(),
        });
        state.refresh_registry()?;
        let now = now();
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let key = ObjectKey::new(NAMESPACE_RESOURCE, "", ns);
            state.store.write(|t| -> Result<(), ApiError> {
                if t.get(&key)?.is_none() {
                    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(),
                        "creationTimestamp": now, "labels": {"kubernetes.io/metadata.name": ns}},
                        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
                    t.put(&key, obj, EventType::Added)?;
                }
                Ok(())
            })?;
        }
        // Every namespace has its `default` service account before any pod can ask for it
        // (namespaces made by an older server, or by `apiserver` without the publisher).
        let (namespaces, _) = state.store.list(NAMESPACE_RESOURCE, None)?;
        state.store.write(|t| -> Result<(), ApiError> {
            for ns in &namespaces {
                if ns["metadata"].get("deletionTimestamp").is_some() {
                    continue;
                }
                if let Some(name) = ns["metadata"]["name"].as_str() {
                    super::objects::service_accounts::ensure_default(t, name, &now)?;
                }
            }
            Ok(())
        })?;
        state.ensure_cluster_objects(
            super::authz::CLUSTER_ROLES,
            crate::semantics::rbac_bootstrap::cluster_roles(),
        )?;
        state.ensure_cluster_objects(
            super::authz::CLUSTER_ROLE_BINDINGS,
            crate::semantics::rbac_bootstrap::cluster_role_bindings(),
        )?;
        Ok(state)
    }

    /// Create each of `objects` (cluster-scoped, of storage name `resource`) that does not
    /// exist yet, as kube-apiserver creates its bootstrap policy; existing ones are left as
    /// they are (an administrator's edits stay). Aggregated roles are then brought up to date.
    pub fn ensure_cluster_objects(
        &self,
        resource: &str,
        objects: Vec<serde_json::Value>,
    ) -> Result<(), ApiError> {
        let now = now();
        self.store.write(|t| -> Result<(), ApiError> {
            for mut obj in objects {
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let key = ObjectKey::new(resource, "", name);
                if t.get(&key)?.is_none() {
                    obj["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
                    obj["metadata"]["creationTimestamp"] = json!(now);
                    t.put(&key, obj, EventType::Added)?;
                }
            }
            Ok(())
        })?;
        self.authorizer.reconcile_aggregation(self)
    }

    /// A snapshot of the registry (shared, not copied).
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Rebuild the registry from the built-ins and every stored, established CRD.
    pub fn refresh_registry(&self) -> Result<(), ApiError> {
        let mut reg = Registry::builtin();
        let (crds, _) = self.store.list(CRD_RESOURCE, None)?;
        for crd in crds {
            if crd.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            if let Ok(res) = resource_from_crd(&crd) {
                reg.insert(res);
            }
        }
        *self.registry.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(reg);
        Ok(())
    }

    /// The resource behind a storage name.
    pub fn resource_by_storage(&self, storage: &str) -> Option<Arc<Resource>> {
        let reg = self.registry.read().unwrap_or_else(|p| p.into_inner());
        reg.all().find(|r| r.storage_name() == storage).cloned()
    }
}

/// Now, as Kubernetes writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| t.to_string())
}
