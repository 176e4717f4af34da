//! [`Object`]: any KubeVirt or CDI object, dispatched on `apiVersion` and `kind`.

use crate::codec::{DecodeError, decode, encode};
use crate::crd;
#[cfg(feature = "schemars")]
use crate::crd::CrdOptions;
use crate::defaults::{ClusterDefaults, Defaulting};
use crate::kind::{Kind, WrongKind};
use crate::validation::{FieldError, Rules};
use crate::{cdi, clone, core, export, instancetype, migrations, pool, snapshot};
#[cfg(feature = "schemars")]
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
#[cfg(feature = "schemars")]
use kube::core::crd::CustomResourceExt;
use serde_json::Value;

macro_rules! kinds {
    ($( $variant:ident => $ty:ty ),* $(,)?) => {
        /// Any object of a kind this crate serves.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum Object {
            $(
                #[doc = concat!("A `", stringify!($variant), "`.")]
                $variant(Box<$ty>),
            )*
        }

        impl Object {
            /// Decode a document strictly (unknown fields are errors), choosing the type by
            /// `apiVersion` and `kind`. Every served version of a kind decodes into its storage type.
            pub fn decode(value: &Value) -> Result<Self, DecodeError> {
                let api_version = value.get("apiVersion").and_then(Value::as_str)
                    .ok_or(DecodeError::MissingTypeMeta("apiVersion"))?;
                let kind = value.get("kind").and_then(Value::as_str)
                    .ok_or(DecodeError::MissingTypeMeta("kind"))?;
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                let version = api_version.rsplit_once('/').map_or(api_version, |(_, v)| v);
                $(
                    if kind == stringify!($variant)
                        && group == <$ty as kube::core::Resource>::group(&())
                        && crd::served_versions(stringify!($variant)).contains(&version)
                    {
                        // Older served versions share the schema; decode as the storage version.
                        let mut value = value.clone();
                        // Every stored object has metadata; a document without it gets an empty one.
                        if value.get("metadata").is_none_or(Value::is_null) {
                            value["metadata"] = Value::Object(Default::default());
                        }
                        value["apiVersion"] = Value::String(
                            <$ty as kube::core::Resource>::api_version(&()).into_owned());
                        return decode::<$ty>(&value).map(|o| Object::$variant(Box::new(o)));
                    }
                )*
                Err(DecodeError::UnknownKind { api_version: api_version.to_string(), kind: kind.to_string() })
            }

            /// Encode as JSON (with `apiVersion` and `kind`).
            pub fn encode(&self) -> Result<Value, DecodeError> {
                match self {
                    $( Object::$variant(o) => encode(o.as_ref()), )*
                }
            }

            /// The object's kind.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Object::$variant(_) => stringify!($variant), )*
                }
            }

            /// The object's metadata.
            pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                match self {
                    $( Object::$variant(o) => &o.metadata, )*
                }
            }

            /// The object's metadata, mutably.
            pub fn metadata_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                match self {
                    $( Object::$variant(o) => &mut o.metadata, )*
                }
            }
        }

        impl Object {
            /// Check the object as upstream's create webhook would (its kind's [`Kind::validate`]).
            pub fn validate(&self) -> Vec<FieldError> {
                match self {
                    $( Object::$variant(o) => o.validate(), )*
                }
            }

            /// Check an update of `old` to `self` ([`Kind::validate_update`]); an `old` of another
            /// kind gets the create checks.
            pub fn validate_update(&self, old: &Object) -> Vec<FieldError> {
                match (old, self) {
                    $( (Object::$variant(old), Object::$variant(new)) => new.validate_update(old), )*
                    _ => self.validate(),
                }
            }

            /// Apply the create-time defaults of its kind ([`Kind::apply_defaults`]).
            pub fn apply_defaults(&mut self, cluster: &ClusterDefaults) {
                match self {
                    $( Object::$variant(o) => o.apply_defaults(cluster), )*
                }
            }
        }

        $(
            impl From<$ty> for Object {
                fn from(o: $ty) -> Object {
                    Object::$variant(Box::new(o))
                }
            }

            impl TryFrom<Object> for $ty {
                type Error = WrongKind;
                fn try_from(o: Object) -> Result<Self, WrongKind> {
                    match o {
                        Object::$variant(o) => Ok(*o),
                        object => Err(WrongKind { expected: stringify!($variant), object }),
                    }
                }
            }

            impl Kind for $ty {
                const KIND: &'static str = stringify!($variant);

                fn validate(&self) -> Vec<FieldError> {
                    let mut errs = Vec::new();
                    Rules::check(self, &mut errs);
                    errs
                }

                fn validate_update(&self, old: &Self) -> Vec<FieldError> {
                    let mut errs = Vec::new();
                    Rules::check(self, &mut errs);
                    Rules::check_update(self, old, &mut errs);
                    errs
                }

                fn apply_defaults(&mut self, cluster: &ClusterDefaults) {
                    Defaulting::default_with(self, cluster);
                }
            }
        )*

        /// Every kind this crate serves, by name.
        pub const KINDS: &[&str] = &[$( stringify!($variant) ),*];

        /// The CustomResourceDefinition of every kind, finished as upstream ships it (needs the
        /// `schemars` feature: the schemas come from the types' `JsonSchema`).
        #[cfg(feature = "schemars")]
        pub fn all_crds(options: &CrdOptions) -> Vec<CustomResourceDefinition> {
            vec![$( crd::finish(<$ty as CustomResourceExt>::crd(), stringify!($variant), options) ),*]
        }
    };
}

kinds! {
    VirtualMachine => core::v1::VirtualMachine,
    VirtualMachineInstance => core::v1::VirtualMachineInstance,
    VirtualMachineInstanceReplicaSet => core::v1::VirtualMachineInstanceReplicaSet,
    VirtualMachineInstanceMigration => core::v1::VirtualMachineInstanceMigration,
    VirtualMachineInstancePreset => core::v1::VirtualMachineInstancePreset,
    KubeVirt => core::v1::KubeVirt,
    VirtualMachineExport => export::v1::VirtualMachineExport,
    VirtualMachineSnapshot => snapshot::v1beta1::VirtualMachineSnapshot,
    VirtualMachineSnapshotContent => snapshot::v1beta1::VirtualMachineSnapshotContent,
    VirtualMachineRestore => snapshot::v1beta1::VirtualMachineRestore,
    VirtualMachineInstancetype => instancetype::v1beta1::VirtualMachineInstancetype,
    VirtualMachineClusterInstancetype => instancetype::v1beta1::VirtualMachineClusterInstancetype,
    VirtualMachinePreference => instancetype::v1beta1::VirtualMachinePreference,
    VirtualMachineClusterPreference => instancetype::v1beta1::VirtualMachineClusterPreference,
    VirtualMachinePool => pool::v1beta1::VirtualMachinePool,
    VirtualMachineClone => clone::v1beta1::VirtualMachineClone,
    MigrationPolicy => migrations::v1alpha1::MigrationPolicy,
    DataVolume => cdi::v1beta1::DataVolume,
    DataSource => cdi::v1beta1::DataSource,
    DataImportCron => cdi::v1beta1::DataImportCron,
}

impl Object {
    /// The object's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.metadata().name.as_deref()
    }
}
