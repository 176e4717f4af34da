//! The VirtualMachineInstanceReplicaSet controller: keeps `spec.replicas` VMIs from the template
//! alive, like apps/v1 ReplicaSet does for pods. [`sync::plan`] decides (pure); [`controller`]
//! runs it with kube-rs. `kubectl scale vmirs` works through the scale subresource.

pub mod controller;
pub mod sync;

pub use sync::{BURST_REPLICAS, Plan, plan};
