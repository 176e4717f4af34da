//! kubevirt-launcher's guest- and user-input parsers, compiled from the launcher's own source
//! files for the fuzz targets (see Cargo.toml for why not the whole crate).

#![allow(dead_code, missing_docs)]

#[path = "../../src/network/dhcp/mod.rs"]
pub mod dhcp;
#[path = "../../src/cloudinit/iso9660/mod.rs"]
pub mod iso9660;
