//! The VirtualMachineInstance controller (upstream's virt-controller, VMI part): every VMI runs
//! in a `virt-launcher-<vmi>-xxxxx` pod, as upstream. The controller creates the pod, follows it
//! through the scheduler and the kubelet, and writes what it learns on the VMI (Pending →
//! Scheduling → Scheduled, `nodeName`, `activePods`, scheduling and image-pull conditions, a pod
//! that dies before the VMI is final → Failed); from Scheduled on, the node agent in pod mode
//! ([`crate::node`]) drives the launcher inside the pod and writes the rest.
//!
//! - [`render`]: the pod for a VMI (pure), as `docs/` and the pod contract describe it.
//! - [`overhead`]: the memory the launcher needs beyond the guest's (pure).
//! - [`pod_state`]: what a launcher pod's status says (shared with the migration controller).
//! - [`sync::plan`]: one sync as a pure function of (VMI, its pods, now).
//! - [`controller`]: runs the plan against an API server with kube-rs.

pub mod controller;
pub mod events;
pub mod overhead;
pub mod pod_state;
pub mod render;
pub mod sync;

pub use render::{ClaimModes, PodConfig, RenderError, pod_for};
pub use sync::{Plan, PodAction, plan};

/// The label every launcher pod carries (`kubevirt.io: virt-launcher`), as upstream.
pub const APP_LABEL: &str = "kubevirt.io";
/// Its value on launcher pods.
pub const APP_LAUNCHER: &str = "virt-launcher";
/// The label naming the VMI (by uid) a launcher pod runs.
pub const CREATED_BY_LABEL: &str = "kubevirt.io/created-by";
/// The label and annotation naming the VMI (by name) a launcher pod runs.
pub const DOMAIN_LABEL: &str = "kubevirt.io/domain";
/// The pod's main container: the launcher.
pub const COMPUTE_CONTAINER: &str = "compute";
/// The container that prints the guest's serial console (`kubectl logs -c guest-console-log`).
pub const CONSOLE_LOG_CONTAINER: &str = "guest-console-log";
