//! Running the pods bound to this node: one worker per pod turns its spec into CRI calls and
//! reports its status; a manager watches the pods and removes what belongs to no pod.

pub mod affinity;
mod backoff;
pub mod claims;
mod cleanup;
pub mod config;
mod env;
pub mod env_sources;
mod events;
mod manager;
pub mod probe;
mod projected;
pub mod quantity;
mod resources;
mod runtime;
mod start;
pub mod status;
pub mod termination;
pub mod volumes;
mod worker;

pub use cleanup::{cgroup_dirs, remove_all_pod_cgroups};
pub use manager::{run_pods, stop_all};
pub use worker::{Context, start_slots};

use std::path::PathBuf;

/// Errors syncing a pod (retried on the next pass).
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// The runtime failed.
    #[error(transparent)]
    Cri(#[from] crate::cri::CriError),
    /// The status could not be written.
    #[error("writing the pod's status: {0}")]
    Status(#[source] Box<kube::Error>),
    /// A host directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// Which path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
