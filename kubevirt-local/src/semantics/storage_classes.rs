//! kube-apiserver's rules for StorageClasses: the defaults (`reclaimPolicy: Delete`,
//! `volumeBindingMode: Immediate`), a provisioner required, and the fields that never change
//! (`provisioner`, `parameters`, `reclaimPolicy`, `volumeBindingMode`), in upstream's words.

use serde_json::{Value, json};

use super::schema::Cause;

fn forbidden(field: &str, message: String) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueForbidden",
        message: format!("Forbidden: {message}"),
    }
}

/// `SetDefaults_StorageClass`.
pub fn defaults(class: &mut Value) {
    for (key, value) in [
        ("reclaimPolicy", "Delete"),
        ("volumeBindingMode", "Immediate"),
    ] {
        if class.get(key).is_none_or(Value::is_null) {
            class[key] = json!(value);
        }
    }
}

/// `ValidateStorageClass`'s check a client can miss: the provisioner.
pub fn validate(class: &Value) -> Vec<Cause> {
    if class["provisioner"].as_str().is_none_or(str::is_empty) {
        return vec![Cause {
            field: "provisioner".into(),
            reason: "FieldValueRequired",
            message: "Required value".into(),
        }];
    }
    vec![]
}

/// `ValidateStorageClassUpdate`.
pub fn validate_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut out = validate(new);
    let empty = json!({});
    let params = |c: &Value| {
        c.get("parameters")
            .filter(|p| !p.is_null())
            .unwrap_or(&empty)
            .clone()
    };
    if params(old) != params(new) {
        out.push(forbidden(
            "parameters",
            "updates to parameters are forbidden.".into(),
        ));
    }
    if old["provisioner"] != new["provisioner"] {
        out.push(forbidden(
            "provisioner",
            "updates to provisioner are forbidden.".into(),
        ));
    }
    if old["reclaimPolicy"] != new["reclaimPolicy"] {
        out.push(forbidden(
            "reclaimPolicy",
            "updates to reclaimPolicy are forbidden.".into(),
        ));
    }
    if old["volumeBindingMode"] != new["volumeBindingMode"] {
        out.push(Cause {
            field: "volumeBindingMode".into(),
            reason: "FieldValueInvalid",
            message: format!(
                "Invalid value: {}: field is immutable",
                new["volumeBindingMode"]
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_immutable_fields() {
        let mut old = json!({"provisioner": "a", "parameters": {"x": "1"}});
        defaults(&mut old);
        assert_eq!(old["reclaimPolicy"], "Delete");
        assert_eq!(old["volumeBindingMode"], "Immediate");
        let mut same = old.clone();
        same["allowVolumeExpansion"] = json!(true);
        assert!(validate_update(&old, &same).is_empty());
        let mut changed = old.clone();
        changed["provisioner"] = json!("b");
        changed["parameters"] = json!({});
        changed["volumeBindingMode"] = json!("WaitForFirstConsumer");
        let fields: Vec<String> = validate_update(&old, &changed)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, ["parameters", "provisioner", "volumeBindingMode"]);
        assert_eq!(validate(&json!({}))[0].field, "provisioner");
    }
}
