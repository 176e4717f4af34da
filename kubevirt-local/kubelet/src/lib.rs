//! The local node's kubelet for `kubevirt-local up`: it runs the pods bound to this node as
//! containers through containerd's CRI v1 API, keeps the `Node` object and its `Lease` fresh and
//! reports every pod's status through `pods/status`.
//!
//! Pieces, one folder each:
//! - [`containerd`]: the private containerd's files (config, CNI network, registry hosts) and its
//!   supervisor;
//! - [`cri`]: the CRI client and the labels that let a restarted kubelet adopt its pods;
//! - [`node`]: capacity, conditions, node info and the lease heartbeat;
//! - [`pod`]: per-pod workers (sandbox, image pulls, init containers, restarts with back-off,
//!   volumes, the environment, status, graceful deletion) and the manager that removes what no
//!   pod owns;
//! - [`images`]: pulls as `imagePullPolicy` asks; the node's own images (pause, virt-launcher)
//!   built from host files as OCI layouts and served with any `--image` layout by the node's
//!   read-only registry ([`images::NodeRegistry`]);
//! - [`programs`]: finding a program on `PATH`;
//! - [`server`]: the kubelet's HTTP endpoint (`/containerLogs/...`) the API server proxies to.

#![deny(missing_docs)]

pub mod containerd;
pub mod cri;
pub mod images;
mod kubelet;
pub mod node;
pub mod pod;
pub mod programs;
pub mod server;
pub mod tls;

pub use kubelet::{Kubelet, KubeletConfig, KubeletError, Runtime, host_ip};
