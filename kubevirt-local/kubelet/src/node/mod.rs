//! This node as the API sees it: the `Node` object (capacity, conditions, addresses, node info)
//! and its `Lease` heartbeat in `kube-node-lease`.

pub mod capacity;
mod lease;
mod status;

pub use lease::{LEASE_NAMESPACE, renew_lease};
pub use status::{NodeError, NodeInfo, register, report_status};
