//! CDI (the Containerized Data Importer, `cdi.kubevirt.io`): DataVolumes' data into claims.
//!
//! - [`import`]: the importer (upstream's `cdi-importer` pod), `kubevirt-controller cdi-importer`.

pub mod import;
