//! kubevirt-rs: KubeVirt rebuilt in Rust.
//!
//! This facade re-exports the workspace's library crates under one name for programs that embed
//! them: [`api`] (typed KubeVirt/CDI API, CRDs, defaulting, validation) and [`vmm`] (the VMM library).
#![deny(missing_docs)]

pub use kubevirt_api as api;
pub use kubevirt_vmm as vmm;
