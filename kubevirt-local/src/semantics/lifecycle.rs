//! Create, update and delete rules for objects (what `customresource/strategy.go` and the generic
//! registry store do).

use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::schema::Cause;
use serde_json::{Value, json};

/// Which endpoint a write came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The object itself.
    Main,
    /// `/status`.
    Status,
}

const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A name for `generateName`: the base (at most 58 characters) and five random characters.
pub fn generate_name(base: &str) -> String {
    let base: String = base.chars().take(58).collect();
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let suffix: String = bytes
        .iter()
        .take(5)
        .map(|b| GENERATE_ALPHABET[usize::from(*b) % GENERATE_ALPHABET.len()] as char)
        .collect();
    format!("{base}{suffix}")
}

/// Whether `name` is a DNS-1123 subdomain (what most kinds require).
/// Whether `name` can name an object of `res`: a DNS subdomain, except for RBAC objects, whose
/// names are only path segments (upstream's `kubevirt.io:admin` roles hold a ':'); the
/// per-kind rules (`validation::name_rule`) check the rest.
pub fn valid_name(res: &Resource, name: &str) -> bool {
    if res.group == "rbac.authorization.k8s.io" {
        return !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%']);
    }
    kubevirt_api::validation::is_dns1123_subdomain(name)
}

/// Make a new object ready to store: server-owned metadata, the namespace from the URL, no status
/// when the status subresource owns it.
pub fn prepare_create(
    res: &Resource,
    obj: &mut Value,
    namespace: &str,
    now: &str,
) -> Result<String, ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        match meta.get("generateName").and_then(Value::as_str) {
            Some(base) if !base.is_empty() => name = generate_name(base),
            _ => {
                return Err(ApiError::invalid(
                    res,
                    "",
                    &[Cause {
                        field: "metadata.name".into(),
                        reason: "FieldValueRequired",
                        message: "Required value: name or generateName is required".into(),
                    }],
                ));
            }
        }
    }
    if !valid_name(res, &name) {
        return Err(ApiError::invalid(
            res,
            &name,
            &[Cause {
                field: "metadata.name".into(),
                reason: "FieldValueInvalid",
                message: if res.group == "rbac.authorization.k8s.io" {
                    format!(
                        "Invalid value: {name:?}: may not be '.' or '..' and may not contain '/' or '%'"
                    )
                } else {
                    format!(
                        "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
                    )
                },
            }],
        ));
    }
    if res.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object does not match the namespace sent on the request ({ns} != {namespace})"
                )));
            }
            _ => meta["namespace"] = json!(namespace),
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    meta["name"] = json!(name);
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now);
    meta["generation"] = json!(1);
    if let Some(m) = meta.as_object_mut() {
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
    }
    if res.status
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
    Ok(name)
}

/// Merge an update of `old` into the object to store, following the rules of `endpoint`.
/// `new`'s `metadata.resourceVersion`, when set, must match `old`'s.
pub fn prepare_update(
    res: &Resource,
    old: &Value,
    mut new: Value,
    endpoint: Endpoint,
    require_rv: bool,
) -> Result<Value, ApiError> {
    let name = old["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !new.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let old_rv = old["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    match new["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && rv != old_rv => return Err(ApiError::conflict(res, &name)),
        None | Some("") if require_rv && !res.builtin => {
            return Err(ApiError::invalid(
                res,
                &name,
                &[Cause {
                    field: "metadata.resourceVersion".into(),
                    reason: "FieldValueInvalid",
                    message: "Invalid value: 0x0: must be specified for an update".into(),
                }],
            ));
        }
        _ => {}
    }
    if let Some(n) = new["metadata"]["name"].as_str()
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    let mut out = match endpoint {
        Endpoint::Status => {
            // Only .status (and managedFields) come from the request.
            let mut o = old.clone();
            match new.get("status") {
                Some(s) => o["status"] = s.clone(),
                None => {
                    if let Some(m) = o.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(mf) = new["metadata"].get("managedFields") {
                o["metadata"]["managedFields"] = mf.clone();
            }
            o
        }
        Endpoint::Main => {
            if res.status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match old["metadata"].get(k) {
                    Some(v) => new["metadata"][k] = v.clone(),
                    None => {
                        if let Some(m) = new["metadata"].as_object_mut() {
                            m.remove(k);
                        }
                    }
                }
            }
            new
        }
    };
    // Deletion has started: no new finalizers.
    if old["metadata"].get("deletionTimestamp").is_some() {
        let before: Vec<&Value> = old["metadata"]["finalizers"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let added = out["metadata"]["finalizers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| !before.contains(&f));
        if added {
            return Err(ApiError::forbidden(format!(
                "{} \"{name}\" is being deleted: no new finalizers can be added",
                res.qualified()
            )));
        }
    }
    // Generation counts changes outside metadata (and status, which has its own endpoint).
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            if res.status {
                m.remove("status");
            }
            m.remove("apiVersion");
            m.remove("kind");
        }
        v
    };
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
    let bumped = endpoint == Endpoint::Main && strip(old) != strip(&out);
    out["metadata"]["generation"] = json!(if bumped { generation + 1 } else { generation });
    out["metadata"]["resourceVersion"] = json!(old_rv);
    Ok(out)
}

/// Whether a stored object differs from `old` in anything a client can see (an unchanged update
/// keeps its resourceVersion).
pub fn unchanged(old: &Value, new: &Value) -> bool {
    old == new
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn res() -> std::sync::Arc<Resource> {
        Registry::builtin().find("", "v1", "configmaps").unwrap()
    }

    #[test]
    fn rbac_names_are_path_segments_and_others_dns_subdomains() {
        let role = Registry::builtin()
            .find("rbac.authorization.k8s.io", "v1", "clusterroles")
            .unwrap();
        let now = "2026-01-01T00:00:00Z";
        let mut o = json!({"metadata": {"name": "kubevirt.io:admin"}, "rules": []});
        assert_eq!(
            prepare_create(&role, &mut o, "", now).unwrap(),
            "kubevirt.io:admin"
        );
        for bad in ["..", "a%b"] {
            let mut o = json!({"metadata": {"name": bad}, "rules": []});
            let e = prepare_create(&role, &mut o, "", now).unwrap_err();
            assert!(format!("{e:?}").contains("may not be '.' or '..'"), "{e:?}");
        }
        let mut o = json!({"metadata": {"name": "a:b"}, "data": {}});
        assert!(prepare_create(&res(), &mut o, "default", now).is_err());
    }

    #[test]
    fn create_sets_server_fields() {
        let mut o = json!({"metadata": {"generateName": "cm-"}, "data": {}});
        let name = prepare_create(&res(), &mut o, "default", "2026-01-01T00:00:00Z").unwrap();
        assert!(name.starts_with("cm-") && name.len() == 8);
        assert_eq!(o["metadata"]["namespace"], "default");
        assert_eq!(o["metadata"]["generation"], 1);
        let mut bad = json!({"metadata": {"name": "Bad_Name"}});
        assert_eq!(
            prepare_create(&res(), &mut bad, "default", "now")
                .unwrap_err()
                .code,
            422
        );
        let mut other_ns = json!({"metadata": {"name": "a", "namespace": "x"}});
        assert_eq!(
            prepare_create(&res(), &mut other_ns, "default", "now")
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn update_checks_rv_and_bumps_generation_on_spec_changes_only() {
        let old = json!({"metadata": {"name": "a", "resourceVersion": "5", "generation": 1, "uid": "u"}, "data": {"x": "1"}});
        let stale = json!({"metadata": {"name": "a", "resourceVersion": "4"}, "data": {}});
        assert_eq!(
            prepare_update(&res(), &old, stale, Endpoint::Main, true)
                .unwrap_err()
                .code,
            409
        );
        let labels = json!({"metadata": {"name": "a", "resourceVersion": "5", "labels": {"l": "v"}}, "data": {"x": "1"}});
        let out = prepare_update(&res(), &old, labels, Endpoint::Main, true).unwrap();
        assert_eq!(
            (
                out["metadata"]["generation"].as_i64(),
                out["metadata"]["uid"].as_str()
            ),
            (Some(1), Some("u"))
        );
        let data = json!({"metadata": {"name": "a"}, "data": {"x": "2"}});
        assert_eq!(
            prepare_update(&res(), &old, data, Endpoint::Main, false).unwrap()["metadata"]["generation"],
            2
        );
    }
}
