//! CDI (the Containerized Data Importer, `cdi.kubevirt.io`): DataVolumes' data into claims.
//!
//! - [`datavolume`]: the DataVolume controller (upstream's cdi-controller): a claim per
//!   DataVolume, an `importer-<dv>` pod that fills it, and the DataVolume's status.
//! - [`import`]: the importer (upstream's `cdi-importer` pod), `kubevirt-controller cdi-importer`.
//! - [`storageprofile`]: a StorageProfile per StorageClass (claim defaults for DataVolumes).
//! - [`upload`]: uploads (upstream's upload server, token and proxy), `virtctl image-upload`.

pub mod datavolume;
pub mod import;
pub mod storageprofile;
pub mod upload;
