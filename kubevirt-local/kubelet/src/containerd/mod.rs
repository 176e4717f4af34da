//! The node's containerd: the files it reads (configuration, CNI network, registry hosts) and the
//! supervisor that keeps a private containerd running.

pub(crate) mod bridge;
mod config;
pub mod masquerade;
pub mod oci_runtime;
mod supervise;

pub use bridge::remove_bridge;
pub use config::{ConfigError, ContainerdConfig, HOSTS_DIR, Layout};
pub use oci_runtime::{OciRuntime, OciRuntimeChoice};
pub use supervise::{SuperviseError, Supervisor, shims_of};
