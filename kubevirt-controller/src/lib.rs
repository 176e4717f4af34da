//! KubeVirt controllers and the node agent, for any cluster (the local control plane embeds
//! them too).
//!
//! - [`cdi`]: CDI's DataVolume machinery (the DataVolume controller, the importer).
//! - [`api`]: the subresource API (`subresources.kubevirt.io`, upstream's virt-api).
//! - [`virtctl`]: the `virtctl` commands.
//! - [`vm`]: the VirtualMachine controller (VM → VMI per run strategy, status back).
//! - [`vmi`]: the VirtualMachineInstance controller (a virt-launcher pod per VMI, its phases).
//! - [`node`]: the node agent (a `kubevirt-launcher` per VMI on the node, status back).
//! - [`snapshot`]: the VirtualMachineSnapshot and VirtualMachineRestore controllers.
//! - [`storage`]: the node's local volumes (provisioner and resizer of `kubevirt-rs.io/local-volume`).
//! - [`install`]: the CRDs, installed or updated on a cluster.
//! - [`operator`]: the KubeVirt operator (upstream's virt-operator): the `KubeVirt` CR installs,
//!   keeps, reports on and removes every component; [`manifests`] writes its install files.
//! - [`controllers`]: the set of controllers a process runs, with one stop, and the client
//!   connection.
//! - [`cli`]: the `kubevirt-controller` commands: `run`, `node`, `provisioner`, `api`, `crds`,
//!   `validate`, `operator`, `manifests`.
#![deny(missing_docs)]

pub mod api;
pub mod cdi;
pub mod cli;
pub mod clusterconfig;
pub mod controllers;
pub mod events;
pub mod install;
pub mod logging;
pub mod manifests;
pub mod metrics;
pub mod migration;
pub mod node;
pub mod operator;
pub mod replicaset;
mod runtime;
pub mod signal;
pub mod snapshot;
pub mod storage;
pub mod virtctl;
pub mod vm;
pub mod vmi;
