//! The DataVolume controller (upstream's cdi-controller; http, registry, blank, same-namespace
//! pvc clone and upload sources): each DataVolume gets a claim of its name, owned by it and sized from
//! `spec.storage` (plus the filesystem overhead) or `spec.pvc`; an `importer-<dv>` pod (or a
//! `cdi-upload-<dv>` pod for uploads) with the claim mounted fills it;
//! the DataVolume's phase, progress, restart count and Bound/Ready/Running conditions follow
//! the claim and the pod as upstream's do.
//!
//! As CDI with `HonorWaitForFirstConsumer` off, the importer pod is the claim's first consumer:
//! a WaitForFirstConsumer claim binds on the node the scheduler picks for the importer, and the
//! VM that uses it later follows the volume there.
//!
//! [`sync::plan`] is the whole decision as a pure function; [`controller`] runs it with kube-rs.

pub mod claim;
pub mod controller;
pub mod events;
pub mod importer;
pub mod progress;
pub mod sync;

/// Claim annotation: the importer pod's phase; `Succeeded` marks the claim populated (kept
/// after the pod is gone, as upstream's).
pub const POD_PHASE: &str = "cdi.kubevirt.io/storage.pod.phase";
/// Claim annotation: the importer pod's name.
pub const IMPORT_POD_NAME: &str = "cdi.kubevirt.io/storage.import.importPodName";
/// DataVolume annotation: an existing claim of its name (not owned by another controller) is
/// adopted as already populated.
pub const ALLOW_CLAIM_ADOPTION: &str = "cdi.kubevirt.io/allowClaimAdoption";
/// DataVolume annotation: the claim of its name was populated by someone else.
pub const PRE_POPULATED: &str = "cdi.kubevirt.io/storage.prePopulated";
/// DataVolume/claim annotation: keep the importer pod after it completes.
pub const RETAIN_POD: &str = "cdi.kubevirt.io/storage.pod.retainAfterCompletion";

/// Settings of the DataVolume controller (upstream's CDIConfig and CDI CR fields).
#[derive(Clone, Debug, PartialEq)]
pub struct DataVolumeConfig {
    /// The importer image: runs `kubevirt-controller cdi-importer`, with qemu-img.
    pub importer_image: String,
    /// Its pull policy.
    pub pull_policy: String,
    /// The share of a Filesystem claim its file system takes (upstream's global default 0.055).
    pub filesystem_overhead: f64,
    /// Registries (`host:port`) spoken to without TLS verification, plain HTTP allowed
    /// (CDIConfig's `spec.insecureRegistries`; the API's CDIConfig `config` adds to these).
    pub insecure_registries: Vec<String>,
}

impl DataVolumeConfig {
    /// Upstream's defaults with `importer_image`.
    pub fn new(importer_image: impl Into<String>) -> Self {
        Self {
            importer_image: importer_image.into(),
            pull_policy: "IfNotPresent".into(),
            filesystem_overhead: 0.055,
            insecure_registries: Vec::new(),
        }
    }
}
