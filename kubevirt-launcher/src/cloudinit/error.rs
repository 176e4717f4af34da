//! What can go wrong turning a cloud-init volume into a disk image.

use super::iso9660::IsoError;

/// A cloud-init volume that cannot become a disk. Every message starts with the field path,
/// e.g. `spec.volumes[1].cloudInitNoCloud.userDataBase64`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloudInitError {
    /// A `...Base64` field that does not decode.
    #[error("{path}: not valid base64 ({source})")]
    InvalidBase64 {
        /// The field.
        path: String,
        /// The decoder's explanation.
        #[source]
        source: base64::DecodeError,
    },
    /// A secret reference the caller could not resolve.
    #[error("{path}: secret {name:?} not found")]
    MissingSecret {
        /// The reference's field.
        path: String,
        /// The secret's name.
        name: String,
    },
    /// A secret without the key the data is read from.
    #[error("{path}: secret {name:?} has none of the keys {keys:?}")]
    MissingSecretKey {
        /// The reference's field.
        path: String,
        /// The secret's name.
        name: String,
        /// The keys looked for, in order.
        keys: &'static [&'static str],
    },
    /// More than one source for the same data.
    #[error("{path}: only one of {fields} may be set")]
    ConflictingSources {
        /// The volume source.
        path: String,
        /// The fields that were set.
        fields: String,
    },
    /// A volume with neither user data nor network data.
    #[error(
        "{path}: one of userData, userDataBase64, secretRef, networkData, networkDataBase64 or \
         networkDataSecretRef is required"
    )]
    NoData {
        /// The volume source.
        path: String,
    },
    /// More than one cloud-init volume in a VMI.
    #[error(
        "{path}: only one cloudInitNoCloud or cloudInitConfigDrive volume is allowed, {first} is one already"
    )]
    MultipleVolumes {
        /// The second volume.
        path: String,
        /// The first volume.
        first: String,
    },
    /// The image writer refused the files (cannot happen for the fixed cloud-init names, kept
    /// for completeness).
    #[error("{path}: {source}")]
    Image {
        /// The volume source.
        path: String,
        /// The writer's error.
        source: IsoError,
    },
}
