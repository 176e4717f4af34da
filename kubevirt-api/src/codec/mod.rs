//! Decoding and encoding API documents the way a strict API server does.
//!
//! Upstream KubeVirt's API server (through the CRD structural schema and kubectl's
//! `--validate=strict`) reports fields it does not know. Serde alone would silently drop them, so
//! decoding here parses into the typed API, serialises the result again and reports every field of the
//! input that did not survive, by its field path. The same comparison, with `null` treated as absent,
//! is what the round-trip conformance tests use to show that no field is lost or invented.

mod error;
mod semantic;
mod strict;
mod yaml;

pub use self::error::DecodeError;
pub use self::semantic::{differences, lost_fields};
pub use self::strict::{decode, encode};
pub use self::yaml::{YamlDocument, documents_from_yaml, to_yaml};
