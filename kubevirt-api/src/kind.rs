//! [`Kind`]: what every served kind can do on its own — convert to and from [`Object`], take the
//! defaults upstream's mutating webhooks apply and pass the checks its validating webhooks run —
//! so a caller holding a typed object needs no `Object` wrapping and no `match`.
//!
//! ```
//! use kubevirt_api::core::v1::{VirtualMachine, VirtualMachineInstance};
//! use kubevirt_api::{Kind, Object};
//!
//! let mut vm = VirtualMachine::from_container_disk("demo", "quay.io/containerdisks/fedora:41")
//!     .memory("1Gi");
//! kubevirt_api::defaults(&mut vm);
//! assert!(kubevirt_api::validate(&vm).is_empty());
//!
//! // The same through the trait, and the round trip through `Object`.
//! assert!(vm.validate().is_empty());
//! let object = Object::from(vm.clone());
//! assert_eq!(VirtualMachine::try_from(object.clone()).unwrap(), vm);
//! let wrong = VirtualMachineInstance::try_from(object).unwrap_err();
//! assert_eq!(wrong.to_string(), "expected a VirtualMachineInstance, got a VirtualMachine");
//!
//! // A problem names its field path.
//! let bad = VirtualMachine::named("bad").run_strategy("Sometimes".into());
//! let errors = kubevirt_api::validate(&bad);
//! assert!(errors.iter().any(|e| e.path.to_string() == "spec.runStrategy"));
//! ```

use crate::defaults::ClusterDefaults;
use crate::object::Object;
use crate::validation::FieldError;

/// A kind this crate serves.
///
/// `validate` and `apply_defaults` are the single source of the rules: [`crate::validation`],
/// [`crate::defaults`](mod@crate::defaults) and the local API server's admission all dispatch here.
pub trait Kind: Sized + Clone + Into<Object> + TryFrom<Object, Error = WrongKind> {
    /// The kind's name (`VirtualMachine`).
    const KIND: &'static str;

    /// Check the object as upstream's create webhook would; empty when it is valid. Every problem
    /// names its field path and says what to change.
    fn validate(&self) -> Vec<FieldError>;

    /// Check an update of `old` to `self` as upstream's update webhook would (the create checks
    /// plus the rules that compare with the stored object).
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let _ = old;
        self.validate()
    }

    /// Apply the create-time defaults of upstream's mutating webhook, for a cluster configured as
    /// `cluster`. Idempotent and deterministic.
    fn apply_defaults(&mut self, cluster: &ClusterDefaults);
}

/// An [`Object`] of another kind than the one asked for; it is handed back unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expected a {expected}, got a {}", object.kind())]
pub struct WrongKind {
    /// The kind asked for.
    pub expected: &'static str,
    /// The object, unchanged.
    pub object: Object,
}

/// Check `object` as upstream's create webhook would; empty when it is valid.
pub fn validate<K: Kind>(object: &K) -> Vec<FieldError> {
    object.validate()
}

/// Apply the create-time defaults upstream's webhook applies on a default cluster
/// ([`ClusterDefaults::default`]); use [`Kind::apply_defaults`] for another configuration.
pub fn defaults<K: Kind>(object: &mut K) {
    object.apply_defaults(&ClusterDefaults::default());
}
