//! kubevirt-local's client-input parsers, compiled from the server's own source files for the
//! fuzz targets (see Cargo.toml for why not the whole crate).

#![allow(dead_code, missing_docs)]

#[path = "../../src/semantics/patch.rs"]
pub mod patch;
#[path = "../../src/semantics/protobuf/mod.rs"]
pub mod protobuf;
#[path = "../../src/semantics/selector.rs"]
pub mod selector;
