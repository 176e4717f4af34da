use super::error::DecodeError;
use super::semantic::lost_fields;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decode `value` into `T`, rejecting fields `T` does not have.
///
/// Type errors carry the field path of the offending value; unknown fields are all reported at once.
pub fn decode<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, DecodeError> {
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| DecodeError::Invalid {
        path: kube_path(&e.path().to_string()),
        message: e.inner().to_string(),
    })?;
    let back = encode(&typed)?;
    let lost = lost_fields(value, &back);
    if lost.is_empty() {
        Ok(typed)
    } else {
        Err(DecodeError::UnknownFields(
            lost.into_iter().map(|p| p.to_string()).collect(),
        ))
    }
}

/// Encode a typed object as JSON.
pub fn encode<T: Serialize>(typed: &T) -> Result<Value, DecodeError> {
    serde_json::to_value(typed).map_err(|e| DecodeError::Invalid {
        path: String::new(),
        message: e.to_string(),
    })
}

/// serde_path_to_error writes `a.b[0].c` already; it writes `.` for the root.
fn kube_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::v1::{Disk, VirtualMachine};
    use serde_json::json;

    #[test]
    fn unknown_nested_field_is_reported_with_its_path() {
        let doc = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm"},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {
                "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio", "buss": "x"}}]}}}}}
        });
        let err = decode::<VirtualMachine>(&doc).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownFields(vec![
                "spec.template.spec.domain.devices.disks[0].disk.buss".into()
            ])
        );
        assert!(err.to_string().contains("unknown field \"buss\""));
    }

    #[test]
    fn type_errors_carry_the_path() {
        let err = decode::<Disk>(&json!({"name": "d", "bootOrder": "first"})).unwrap_err();
        match err {
            DecodeError::Invalid { path, .. } => assert_eq!(path, "bootOrder"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_required_field_is_an_error() {
        assert!(matches!(
            decode::<Disk>(&json!({"cache": "none"})),
            Err(DecodeError::Invalid { .. })
        ));
    }
}
