//! DataVolume defaults (CDI).

use crate::cdi::v1beta1::DataVolumeSpec;

/// CDI treats an unset content type as `kubevirt` (a disk image); make it explicit.
pub(super) fn default_dv_spec(spec: &mut DataVolumeSpec) {
    spec.content_type.get_or_insert_with(|| "kubevirt".into());
}
