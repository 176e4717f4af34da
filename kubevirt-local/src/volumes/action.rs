//! What the binder does: one [`Action`] per change, about a claim ([`ClaimId`]) or a volume
//! (by name). [`plan`](super::plan::plan) decides them, [`run`](super::run) carries them out.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

/// A claim, by namespace, name and uid.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClaimId {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
}

impl ClaimId {
    /// The claim's id.
    pub fn of(claim: &PersistentVolumeClaim) -> Self {
        ClaimId {
            namespace: claim.namespace().unwrap_or_default(),
            name: claim.name_any(),
            uid: claim.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

/// `Normal` or `Warning`, for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Expected.
    Normal,
    /// Needs attention.
    Warning,
}

/// One thing the binder does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Bind `volume` and `claim` to each other (whatever of it is not done yet).
    Bind {
        /// The volume.
        volume: String,
        /// The claim.
        claim: ClaimId,
        /// The binder chose the volume (the claim named none).
        chose_volume: bool,
        /// The binder chose the claim (the volume named none).
        chose_claim: bool,
    },
    /// A volume free for any claim: phase Available.
    Available(String),
    /// A volume whose claim is gone: phase Released.
    Released(String),
    /// A volume the binder had given a claim that now holds another: free it again.
    Unbind(String),
    /// A bound claim whose volume is gone: phase Lost.
    Lost(ClaimId),
    /// Ask `provisioner` for the claim's volume (annotate it).
    Provision {
        /// The claim.
        claim: ClaimId,
        /// The class's provisioner.
        provisioner: String,
    },
    /// A claim being deleted that no pod uses: drop its `kubernetes.io/pvc-protection`.
    UnprotectClaim(ClaimId),
    /// A volume being deleted that is not bound: drop its `kubernetes.io/pv-protection`.
    UnprotectVolume(String),
    /// Give a claim that names no class the default one.
    AssignClass {
        /// The claim.
        claim: ClaimId,
        /// The default class.
        class: String,
    },
    /// Tell about a claim.
    Event {
        /// The claim.
        claim: ClaimId,
        /// Normal or Warning.
        severity: Severity,
        /// Reason.
        reason: &'static str,
        /// Message.
        message: String,
    },
}
