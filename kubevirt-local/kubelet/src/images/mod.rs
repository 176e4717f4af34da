//! Images: pulls as `imagePullPolicy` asks ([`pull`](ensure_image)), and the node's own images
//! built from host files ([`local`], [`node`]: the pause and virt-launcher images), written as
//! OCI image layouts; the node's read-only [`registry`] serving them ([`served`]), and the
//! [`node_registry`] `up` runs with the node's images; the release images of the components
//! ([`components`]).

pub mod cache;
pub mod components;
pub mod elf;
pub mod local;
pub mod node;
pub mod node_registry;
mod pull;
pub mod registry;
pub mod served;

pub use local::{BuiltImage, LocalImage, LocalImageError};
pub use node_registry::{NodeRegistry, NodeRegistryConfig, NodeRegistryError};
pub use pull::{PullError, ensure_image, pull_policy};
