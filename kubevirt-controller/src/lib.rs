//! KubeVirt controllers, node agent and subresource API.
//!
//! Today the crate provides the offline commands every deployment starts with: generating the CRDs
//! (`kubevirt-controller crds`) and checking documents the way upstream's webhooks would
//! (`kubevirt-controller validate -f FILE`).
#![deny(missing_docs)]

pub mod cli;
pub mod node;
pub mod vm;
