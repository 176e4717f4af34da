//! The CRI v1 client: containerd's runtime and image services over gRPC on its unix socket,
//! and the labels the kubelet puts on sandboxes and containers (as upstream's kubelet does).

mod client;
pub mod labels;

pub(crate) use client::call as client_call;
pub use client::{Cri, CriError};
pub use k8s_cri::v1 as api;
