//! What a claim asks of a local volume, checked (pure): its size, its volume mode and its access
//! modes. Each refusal names the claim's field at fault, for the `ProvisioningFailed` event.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// How a volume is given to pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeMode {
    /// A directory, mounted.
    Filesystem,
    /// A block device (a loop device over a sparse file).
    Block,
}

impl VolumeMode {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeMode::Filesystem => "Filesystem",
            VolumeMode::Block => "Block",
        }
    }

    /// The API's `volumeMode` field: absent means Filesystem (the API server's default).
    pub fn parse(field: Option<&str>) -> Result<Self, ClaimError> {
        match field {
            None | Some("Filesystem") => Ok(VolumeMode::Filesystem),
            Some("Block") => Ok(VolumeMode::Block),
            Some(other) => Err(ClaimError::VolumeMode(other.to_string())),
        }
    }
}

/// The access modes a local volume offers (upstream's local volumes: one node's disk).
pub const ACCESS_MODES: [&str; 3] = ["ReadWriteOnce", "ReadWriteOncePod", "ReadOnlyMany"];

/// A claim's request, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `spec.resources.requests.storage` as written (the PV's capacity).
    pub quantity: Quantity,
    /// The same in bytes.
    pub bytes: u64,
    /// The volume mode.
    pub mode: VolumeMode,
    /// `spec.accessModes`.
    pub access_modes: Vec<String>,
}

/// Why a claim cannot get a local volume; each names the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimError {
    /// No size asked.
    #[error(
        "spec.resources.requests.storage: the claim asks for no size; a local volume needs one (e.g. 10Gi)"
    )]
    NoSize,
    /// The size is not a quantity of bytes.
    #[error("spec.resources.requests.storage: {value:?} is not a size in bytes: {message}")]
    BadSize {
        /// As written.
        value: String,
        /// Why.
        message: String,
    },
    /// A zero size.
    #[error("spec.resources.requests.storage: {0:?} is zero; a volume needs at least one byte")]
    ZeroSize(String),
    /// A volume mode neither Filesystem nor Block.
    #[error("spec.volumeMode: {0:?} is neither Filesystem nor Block")]
    VolumeMode(String),
    /// No access mode.
    #[error(
        "spec.accessModes: none given; a local volume offers ReadWriteOnce, ReadWriteOncePod or ReadOnlyMany"
    )]
    NoAccessModes,
    /// An access mode a local volume cannot offer.
    #[error(
        "spec.accessModes: {0} is not possible on a local volume (it lives on one node's disk); use ReadWriteOnce, ReadWriteOncePod or ReadOnlyMany"
    )]
    AccessMode(String),
}

/// The claim's `spec.resources.requests.storage`, in bytes (with the quantity as written).
pub fn requested(claim: &PersistentVolumeClaim) -> Result<(Quantity, u64), ClaimError> {
    let q = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref()?.requests.as_ref()?.get("storage"))
        .ok_or(ClaimError::NoSize)?;
    let bytes = kubevirt_api::quantity::bytes_of(q).map_err(|e| ClaimError::BadSize {
        value: q.0.clone(),
        message: e.to_string(),
    })?;
    if bytes == 0 {
        return Err(ClaimError::ZeroSize(q.0.clone()));
    }
    Ok((q.clone(), bytes))
}

/// The claim's request, checked for a local volume.
pub fn request(claim: &PersistentVolumeClaim) -> Result<Request, ClaimError> {
    let spec = claim.spec.as_ref();
    let (quantity, bytes) = requested(claim)?;
    let mode = VolumeMode::parse(spec.and_then(|s| s.volume_mode.as_deref()))?;
    let access_modes = spec
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    if access_modes.is_empty() {
        return Err(ClaimError::NoAccessModes);
    }
    if let Some(bad) = access_modes
        .iter()
        .find(|m| !ACCESS_MODES.contains(&m.as_str()))
    {
        return Err(ClaimError::AccessMode(bad.clone()));
    }
    Ok(Request {
        quantity,
        bytes,
        mode,
        access_modes,
    })
}

/// `bytes` as the largest binary unit that divides it (`10Gi`, `1536Mi`, `1000 bytes`), else to one
/// decimal with the exact count, for messages.
pub fn human(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")];
    let fits = |shift: u32| bytes >= 1 << shift;
    if let Some((shift, unit)) = UNITS
        .iter()
        .find(|(s, _)| fits(*s) && bytes.is_multiple_of(1 << s))
    {
        return format!("{}{unit}", bytes >> shift);
    }
    match UNITS[..3].iter().find(|(s, _)| fits(*s)) {
        Some((shift, unit)) => format!(
            "{:.1}{unit} ({bytes} bytes)",
            bytes as f64 / (1u64 << shift) as f64
        ),
        None => format!("{bytes} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn claim(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": "c"}, "spec": spec})).unwrap()
    }

    fn good() -> serde_json::Value {
        json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}})
    }

    #[test]
    fn a_plain_claim_is_a_filesystem_volume_of_its_size() {
        let r = request(&claim(good())).unwrap();
        assert_eq!(r.bytes, 1 << 30);
        assert_eq!(r.quantity.0, "1Gi");
        assert_eq!(r.mode, VolumeMode::Filesystem);
        assert_eq!(r.access_modes, ["ReadWriteOnce"]);
        let mut block = good();
        block["volumeMode"] = json!("Block");
        assert_eq!(request(&claim(block)).unwrap().mode, VolumeMode::Block);
    }

    #[test]
    fn each_refusal_names_its_field() {
        let refuse = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut s = good();
            edit(&mut s);
            request(&claim(s)).unwrap_err().to_string()
        };
        assert!(refuse(&|s| s["resources"] = json!({})).starts_with("spec.resources.requests"));
        assert!(
            refuse(&|s| s["resources"]["requests"]["storage"] = json!("lots"))
                .contains("\"lots\" is not a size")
        );
        assert!(refuse(&|s| s["resources"]["requests"]["storage"] = json!("0")).contains("zero"));
        assert_eq!(
            refuse(&|s| s["volumeMode"] = json!("Raw")),
            "spec.volumeMode: \"Raw\" is neither Filesystem nor Block"
        );
        assert!(refuse(&|s| s["accessModes"] = json!([])).starts_with("spec.accessModes: none"));
        let rwx = refuse(&|s| s["accessModes"] = json!(["ReadWriteOnce", "ReadWriteMany"]));
        assert!(rwx.starts_with("spec.accessModes: ReadWriteMany is not possible"));
        // ReadOnlyMany and ReadWriteOncePod are a local volume's too.
        let mut s = good();
        s["accessModes"] = json!(["ReadOnlyMany", "ReadWriteOncePod"]);
        assert!(request(&claim(s)).is_ok());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(10 << 30), "10Gi");
        assert_eq!(human(1536 << 20), "1536Mi");
        assert_eq!(human(1000), "1000 bytes");
        assert_eq!(human(1_000_000_000), "953.7Mi (1000000000 bytes)");
    }

    proptest! {
        /// Whatever a user writes as the size, the check answers (no panic), and an accepted
        /// size is the quantity's bytes.
        #[test]
        fn any_size_is_accepted_or_refused_with_the_field(size in "\\PC{0,12}|[0-9]{1,20}(\\.[0-9]{1,3})?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m|e[0-9])?") {
            let mut s = good();
            s["resources"]["requests"]["storage"] = json!(size);
            match request(&claim(s)) {
                Ok(r) => {
                    prop_assert!(r.bytes > 0);
                    prop_assert_eq!(r.quantity.0, size);
                }
                Err(e) => prop_assert!(e.to_string().starts_with("spec.resources.requests.storage: ")),
            }
        }

        #[test]
        fn human_never_panics(bytes in any::<u64>()) {
            prop_assert!(!human(bytes).is_empty());
        }
    }
}
