//! Typed KubeVirt and CDI API for Rust: upstream-compatible types, CRD generation, defaulting and
//! validation.
//!
//! Modules follow upstream's API groups: [`core::v1`] (`kubevirt.io/v1`), [`snapshot::v1beta1`],
//! [`instancetype::v1beta1`], [`pool::v1beta1`], [`clone::v1beta1`], [`export::v1`],
//! [`migrations::v1alpha1`] and [`cdi::v1beta1`]. The types are generated from upstream's OpenAPI
//! documents by `scripts/gen-api.py`; field names and nesting are upstream's, so a YAML that works on
//! upstream KubeVirt decodes here with no field lost.
//!
//! ```
//! use kubevirt_api::codec::{decode, documents_from_yaml};
//! use kubevirt_api::core::v1::{RunStrategy, VirtualMachine};
//!
//! let yaml = r#"
//! apiVersion: kubevirt.io/v1
//! kind: VirtualMachine
//! metadata: {name: demo}
//! spec:
//!   runStrategy: Always
//!   template:
//!     spec:
//!       domain:
//!         devices: {}
//!         memory: {guest: 128Mi}
//! "#;
//! let doc = &documents_from_yaml(yaml).unwrap()[0];
//! let vm: VirtualMachine = decode(&doc.value).unwrap();
//! assert_eq!(vm.spec.run_strategy, Some(RunStrategy::Always));
//! ```
//!
//! Building one in Rust reads like the YAML ([`builders`]), and every served kind checks itself
//! ([`Kind`]):
//!
//! ```
//! use kubevirt_api::core::v1::{RunStrategy, VirtualMachine};
//!
//! let mut vm = VirtualMachine::from_container_disk("demo", "quay.io/containerdisks/fedora:41")
//!     .run_strategy(RunStrategy::Always)
//!     .memory("1Gi")
//!     .cloud_init_user_data("#cloud-config\npassword: fedora\n");
//! kubevirt_api::defaults(&mut vm); // upstream's mutating webhook
//! assert!(kubevirt_api::validate(&vm).is_empty()); // its validating webhook
//! ```
//!
//! Values from a closed set (run strategy, VMI phase, disk bus, ...) are enums that keep any other
//! value as `Other(String)`, so no document loses a value this crate does not know.
//!
//! The crate names no Kubernetes version: the final binary enables one `k8s-openapi` version
//! feature (see [`k8s_openapi`]). The `schemars` feature adds the types' JSON schemas and
//! `object::all_crds`.
//!
//! - [`codec`]: strict decoding (unknown fields are errors with their path) and YAML helpers.
//! - [`object`]: [`Object`], any served kind, dispatched on `apiVersion`/`kind`; `From`/`TryFrom`
//!   convert each kind to and from it.
//! - [`builders`]: constructors and chainable setters for the common shapes.
//! - [`crd`]: CustomResourceDefinitions as upstream ships them, with CEL rules.
//! - [`defaults`](mod@defaults) and [`validation`]: the logic of upstream's mutating and validating webhooks.
//! - [`volumesnapshot`]: the CSI snapshot API (`snapshot.storage.k8s.io/v1`) KubeVirt's snapshots
//!   build on, with its CRDs for clusters that lack the external-snapshotter.
#![deny(missing_docs)]

mod string_enum;

#[allow(clippy::all, missing_docs)]
mod generated;
pub use generated::*;

/// Calls `$m!` with every served kind that upstream's webhooks neither default nor validate, so
/// the defaults and the validation modules name one list.
macro_rules! kinds_without_webhook_rules {
    ($m:ident) => {
        $m!(
            crate::core::v1::VirtualMachineInstanceMigration,
            crate::core::v1::VirtualMachineInstancePreset,
            crate::core::v1::KubeVirt,
            crate::export::v1::VirtualMachineExport,
            crate::snapshot::v1beta1::VirtualMachineSnapshotContent,
            crate::instancetype::v1beta1::VirtualMachineInstancetype,
            crate::instancetype::v1beta1::VirtualMachineClusterInstancetype,
            crate::instancetype::v1beta1::VirtualMachinePreference,
            crate::instancetype::v1beta1::VirtualMachineClusterPreference,
            crate::pool::v1beta1::VirtualMachinePool,
            crate::clone::v1beta1::VirtualMachineClone,
            crate::migrations::v1alpha1::MigrationPolicy,
            crate::cdi::v1beta1::DataSource,
            crate::cdi::v1beta1::DataImportCron,
        );
    };
}

pub mod builders;
pub mod codec;
pub mod crd;
pub mod defaults;
pub mod duration;
mod kind;
pub mod labels;
pub mod object;
pub mod path;
pub mod quantity;
pub mod validation;
pub mod volumesnapshot;

pub use kind::{Kind, WrongKind, defaults, validate};
pub use object::Object;

/// The `k8s-openapi` this crate is built on. The Kubernetes version is the final binary's choice:
/// enable one `k8s-openapi` version feature (`v1_33` ... `v1_37` or `latest`) in the binary crate.
pub use k8s_openapi;
/// The `kube` this crate is built on: use it (`kubevirt_api::kube`) so the versions always match.
pub use kube;
