//! Checks every write goes through before anything else looks at it: the body's shape (a JSON
//! object whose `metadata` is an object), built-in kinds decoded into their k8s-openapi types
//! (so a stored object never breaks a typed client), and Kubernetes' metadata rules (names, label
//! and annotation syntax). Each failure names the field path.

use super::schema::Cause;
use crate::error::ApiError;
use crate::registry::Resource;
use kubevirt_api::validation::{is_dns1123_label, is_dns1123_subdomain};
use serde_json::Value;

/// The largest total size of a object's annotations (keys and values), as upstream.
const ANNOTATIONS_MAX: usize = 256 * 1024;

/// The JSON type of `v`, as messages name it.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A request body (or a patch's result) must be a JSON object whose `metadata`, when present, is
/// an object: everything after this indexes into both.
pub fn require_object(v: &Value) -> Result<(), ApiError> {
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "the object must be a JSON object, not {}",
            type_name(v)
        )));
    }
    match v.get("metadata") {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "metadata: Invalid value: expected an object (ObjectMeta), not {}",
            type_name(other)
        ))),
    }
}

/// Every cause `obj` (a complete object of `res`, server-owned fields set) violates.
pub fn validate(res: &Resource, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if res.builtin {
        causes.extend(typed(&res.group, &res.kind, obj));
    }
    if !causes.iter().any(|c| c.field.starts_with("metadata")) {
        causes.extend(metadata(res, obj));
    }
    causes
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueInvalid",
        message: message.into(),
    }
}

/// Decode `obj` as `T`, reporting where it does not fit.
fn decode<T>(obj: &Value) -> Option<Cause>
where
    T: serde::de::DeserializeOwned + k8s_openapi::Resource,
{
    let mut v = obj.clone();
    v["apiVersion"] = Value::String(T::API_VERSION.into());
    v["kind"] = Value::String(T::KIND.into());
    let err = serde_path_to_error::deserialize::<_, T>(&v).err()?;
    let path = err.path().to_string();
    let field = if path == "." { String::new() } else { path };
    Some(invalid(
        field,
        format!("Invalid value: {}", err.into_inner()),
    ))
}

/// The built-in kind's typed decoding (events and CRDs have checks of their own).
fn typed(group: &str, kind: &str, obj: &Value) -> Option<Cause> {
    use k8s_openapi::api::{
        apps, batch, coordination, core, networking, policy, rbac, scheduling, storage,
    };
    match (group, kind) {
        ("", "Namespace") => decode::<core::v1::Namespace>(obj),
        ("", "Pod") => decode::<core::v1::Pod>(obj),
        ("", "ConfigMap") => decode::<core::v1::ConfigMap>(obj),
        ("", "Secret") => decode::<core::v1::Secret>(obj),
        ("", "Service") => decode::<core::v1::Service>(obj),
        ("", "PersistentVolumeClaim") => decode::<core::v1::PersistentVolumeClaim>(obj),
        ("", "PersistentVolume") => decode::<core::v1::PersistentVolume>(obj),
        ("storage.k8s.io", "StorageClass") => decode::<storage::v1::StorageClass>(obj),
        ("", "Node") => decode::<core::v1::Node>(obj),
        ("", "ServiceAccount") => decode::<core::v1::ServiceAccount>(obj),
        ("", "ResourceQuota") => decode::<core::v1::ResourceQuota>(obj),
        ("", "Endpoints") => decode::<core::v1::Endpoints>(obj),
        ("coordination.k8s.io", "Lease") => decode::<coordination::v1::Lease>(obj),
        ("apps", "Deployment") => decode::<apps::v1::Deployment>(obj),
        ("apps", "ControllerRevision") => decode::<apps::v1::ControllerRevision>(obj),
        ("apps", "DaemonSet") => decode::<apps::v1::DaemonSet>(obj),
        ("apps", "ReplicaSet") => decode::<apps::v1::ReplicaSet>(obj),
        ("batch", "Job") => decode::<batch::v1::Job>(obj),
        ("batch", "CronJob") => decode::<batch::v1::CronJob>(obj),
        ("rbac.authorization.k8s.io", "Role") => decode::<rbac::v1::Role>(obj),
        ("rbac.authorization.k8s.io", "RoleBinding") => decode::<rbac::v1::RoleBinding>(obj),
        ("rbac.authorization.k8s.io", "ClusterRole") => decode::<rbac::v1::ClusterRole>(obj),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            decode::<rbac::v1::ClusterRoleBinding>(obj)
        }
        ("policy", "PodDisruptionBudget") => decode::<policy::v1::PodDisruptionBudget>(obj),
        ("scheduling.k8s.io", "PriorityClass") => decode::<scheduling::v1::PriorityClass>(obj),
        ("networking.k8s.io", "Ingress") => decode::<networking::v1::Ingress>(obj),
        _ => None,
    }
}

/// Metadata rules every kind shares: ObjectMeta's types, the name's syntax for the kind, label
/// and annotation syntax.
fn metadata(res: &Resource, obj: &Value) -> Vec<Cause> {
    let meta = &obj["metadata"];
    if let Err(e) = serde_path_to_error::deserialize::<
        _,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    >(meta)
    {
        let path = e.path().to_string();
        let field = if path == "." {
            "metadata".to_string()
        } else {
            format!("metadata.{path}")
        };
        return vec![invalid(field, format!("Invalid value: {}", e.into_inner()))];
    }
    let mut causes = Vec::new();
    if let Some(name) = meta["name"].as_str()
        && let Some(rule) = name_rule(res, name)
    {
        causes.push(invalid(
            "metadata.name",
            format!("Invalid value: {name:?}: {rule}"),
        ));
    }
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if let Some(why) = qualified_name(k) {
                causes.push(invalid(
                    "metadata.labels",
                    format!("Invalid value: {k:?}: {why}"),
                ));
            }
            let v = v.as_str().unwrap_or_default();
            if let Some(why) = label_value(v) {
                causes.push(invalid(
                    "metadata.labels",
                    format!("Invalid value: {v:?}: {why}"),
                ));
            }
        }
    }
    if let Some(annotations) = meta["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in annotations {
            total += k.len() + v.as_str().map_or(0, str::len);
            if let Some(why) = qualified_name(k) {
                causes.push(invalid(
                    "metadata.annotations",
                    format!("Invalid value: {k:?}: {why}"),
                ));
            }
        }
        if total > ANNOTATIONS_MAX {
            causes.push(Cause {
                field: "metadata.annotations".into(),
                reason: "FieldValueTooLong",
                message: format!("Too long: must have at most {ANNOTATIONS_MAX} bytes"),
            });
        }
    }
    causes
}

/// Why `name` is not a valid name for `res` (upstream's per-kind name validation).
fn name_rule(res: &Resource, name: &str) -> Option<&'static str> {
    match (res.group.as_str(), res.kind.as_str()) {
        ("", "Namespace") => (!is_dns1123_label(name)).then_some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        ),
        ("", "Service") => (!(is_dns1123_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase())))
            .then_some(
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            ),
        ("rbac.authorization.k8s.io", _) => (name.is_empty()
            || name == "."
            || name == ".."
            || name.contains(['/', '%']))
        .then_some("may not be '.' or '..' and may not contain '/' or '%'"),
        _ => (!is_dns1123_subdomain(name)).then_some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ),
    }
}

/// `[-A-Za-z0-9_.]`, starting and ending alphanumeric, 1..=63 characters.
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Why `key` is not a qualified name (`[prefix/]name`), as label and annotation keys must be.
fn qualified_name(key: &str) -> Option<&'static str> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        return Some(
            "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        );
    }
    if !is_name_part(name) {
        return Some(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        );
    }
    None
}

/// Why `v` is not a label value (empty, or a name part).
fn label_value(v: &str) -> Option<&'static str> {
    (!v.is_empty() && !is_name_part(v)).then_some(
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_follow_upstream() {
        for ok in ["a", "app.kubernetes.io/name", "A_b-c.D", "kubevirt.io/vm"] {
            assert_eq!(qualified_name(ok), None, "{ok}");
        }
        for bad in [
            "",
            "Bad Key!",
            "-a",
            "a/",
            "/a",
            "a/b/c",
            "UPPER.io/x",
            &"x".repeat(64),
        ] {
            assert!(qualified_name(bad).is_some(), "{bad}");
        }
        assert_eq!(label_value(""), None);
        assert!(label_value("v v").is_some());
    }

    #[test]
    fn shape_errors_name_what_is_wrong() {
        assert!(require_object(&serde_json::json!([1])).is_err());
        let e = require_object(&serde_json::json!({"metadata": "x"})).unwrap_err();
        assert!(e.message.contains("metadata"), "{e}");
        assert!(require_object(&serde_json::json!({"metadata": null})).is_ok());
    }
}
