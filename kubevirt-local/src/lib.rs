//! The local control plane: a Kubernetes-compatible API server on embedded SQLite, so the whole
//! system runs on one machine with the real `kubectl` and no cluster.
//!
//! - [`allocator`]: the global allocator of the binaries that run the plane (mimalloc).
//! - [`storage`]: durable objects, the global resourceVersion and the watch history (SQLite).
//! - [`registry`]: the served kinds (built-ins and CRDs registered at run time).
//! - [`semantics`]: the API server's rules as pure functions (selectors, patches, schemas,
//!   create/update rules).
//! - [`server`]: HTTP(S) routing, discovery, OpenAPI, watches, admission, garbage collection.
//! - [`plane`]: the local control plane's controllers (scheduler, workloads), run by `up`.
//! - [`recorder`]: the events the local controllers record.
//! - [`scheduler`]: the local kube-scheduler (binds pending pods to nodes).
//! - [`serviceaccounts`]: default service accounts, the root CA ConfigMap, the `kubernetes` Service.
//! - [`setup`]: the data directory: TLS material, the bearer token and the kubeconfig.
//! - [`volumes`]: the local PV controller (binds claims and volumes, asks provisioners).
//! - [`workloads`]: the ReplicaSet, Deployment and DaemonSet controllers.
//! - [`x509`]: users from client certificates (the client CA, issuing, verifying).
//! - [`up`]: the whole local system in one process (API server, CRDs, controllers, node agent).
#![deny(missing_docs)]

pub mod allocator;
pub mod error;
pub mod plane;
pub mod recorder;
pub mod registry;
pub mod scheduler;
pub mod semantics;
pub mod server;
pub mod serviceaccounts;
pub mod setup;
pub mod storage;
pub mod up;
pub mod volumes;
pub mod workloads;
pub mod x509;
