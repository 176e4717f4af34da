//! String values from a closed set, typed: the `string_enum!` macro the generated API uses for
//! upstream's enumerations (run strategy, VMI phase, disk bus, ...).
//!
//! Each enum has one variant per value upstream defines and `Other(String)` for any other value, so
//! a document written by a newer (or older) upstream decodes and encodes again unchanged. On the
//! wire, and in JSON schemas, it is a plain string. It dereferences to its wire string, so
//! `field.as_deref() == Some("Always")` reads as it did when the field was a `String`.

/// Define a string enumeration with an `Other(String)` fallback.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        ///
        /// A value upstream does not define is kept as
        #[doc = concat!("[`", stringify!($name), "::Other`],")]
        /// so no document loses it in a round trip.
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value not listed above, kept as written.
            Other(String),
        }

        impl $name {
            /// Every value upstream defines, as written on the wire.
            pub const VALUES: &'static [&'static str] = &[$($wire),*];

            /// The value as written on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )*
                    Self::Other(s) => s,
                }
            }

            /// Whether this is a value upstream defines (not `Other`).
            pub fn is_known(&self) -> bool {
                !matches!(self, Self::Other(_))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $wire => Self::$variant, )*
                    other => Self::Other(other.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match Self::from(s.as_str()) {
                    Self::Other(_) => Self::Other(s),
                    known => known,
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                match v {
                    $name::Other(s) => s,
                    known => known.as_str().to_string(),
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self::from(s))
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                self.as_str()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                <String as serde::Deserialize>::deserialize(deserializer).map(Self::from)
            }
        }

        #[cfg(feature = "schemars")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                <String as schemars::JsonSchema>::schema_name()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                // A plain string, as upstream's CRDs declare it: the set is open on the wire.
                <String as schemars::JsonSchema>::json_schema(generator)
            }
        }
    };
}

pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    use crate::core::v1::RunStrategy;

    #[test]
    fn known_and_unknown_values_round_trip() {
        for wire in ["Always", "Halted", "always", "", "SomethingNew"] {
            let v: RunStrategy = serde_json::from_value(serde_json::json!(wire)).unwrap();
            assert_eq!(v.is_known(), RunStrategy::VALUES.contains(&wire), "{wire}");
            assert_eq!(serde_json::to_value(&v).unwrap(), serde_json::json!(wire));
            assert_eq!(String::from(v.clone()), wire);
            assert_eq!(&*v, wire);
        }
        assert_eq!(RunStrategy::from("Always"), RunStrategy::Always);
        assert_eq!(
            RunStrategy::from("Sometimes".to_string()),
            RunStrategy::Other("Sometimes".into())
        );
    }
}
