//! kube-apiserver's rules for PersistentVolumeClaims and PersistentVolumes, as pure functions:
//! the defaults (`volumeMode: Filesystem`, a PV's `Retain` policy, phase `Pending`), the
//! DefaultStorageClass admission plugin, the claim's validation on create and on update (a spec
//! immutable but for `resources.requests` and `volumeAttributesClassName` of a bound claim, no
//! shrinking below `status.capacity`) and the PersistentVolumeClaimResize plugin (growing needs
//! a class with `allowVolumeExpansion`). Each cause names its field path, in upstream's words.

use serde_json::{Value, json};

use super::schema::Cause;
use crate::server::printers::is_default_class;

/// The storage name of StorageClasses.
pub const STORAGE_CLASSES: &str = "storage.k8s.io/storageclasses";

/// The annotation older clients name a claim's class with (honoured as upstream still does).
const BETA_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

fn cause(field: &str, reason: &'static str, message: impl Into<String>) -> Cause {
    Cause {
        field: field.into(),
        reason,
        message: message.into(),
    }
}

fn set_if_unset(node: &mut Value, key: &str, value: Value) {
    if node.is_object() && node.get(key).is_none_or(|v| v.is_null() || v == "") {
        node[key] = value;
    }
}

/// The defaults upstream applies to a claim or volume on every write (`SetDefaults_*`), and on
/// create the status a new one starts with.
pub fn defaults(kind: &str, obj: &mut Value, create: bool) {
    if !obj["spec"].is_object() {
        return;
    }
    set_if_unset(&mut obj["spec"], "volumeMode", json!("Filesystem"));
    if kind == "PersistentVolume" {
        set_if_unset(
            &mut obj["spec"],
            "persistentVolumeReclaimPolicy",
            json!("Retain"),
        );
    }
    if create {
        obj["status"] = json!({"phase": "Pending"});
    }
}

/// The default StorageClass among `classes`: of those annotated default, the newest (ties: the
/// first name), as upstream's `GetDefaultClass`.
pub fn default_class(classes: &[Value]) -> Option<String> {
    classes
        .iter()
        .filter(|c| is_default_class(c))
        .max_by(|a, b| {
            let ts = |c: &Value| {
                c["metadata"]["creationTimestamp"]
                    .as_str()
                    .map(str::to_string)
            };
            let name = |c: &Value| c["metadata"]["name"].as_str().map(str::to_string);
            ts(a).cmp(&ts(b)).then_with(|| name(b).cmp(&name(a)))
        })
        .and_then(|c| c["metadata"]["name"].as_str().map(str::to_string))
}

/// Does the claim name a class (an empty name counts: it asks for no class)?
fn has_class(claim: &Value) -> bool {
    claim["metadata"]["annotations"][BETA_CLASS_ANNOTATION].is_string()
        || claim["spec"]["storageClassName"].is_string()
}

/// The DefaultStorageClass admission plugin: a claim created without a class gets the default
/// one, when there is one.
pub fn admit_default_class(claim: &mut Value, classes: &[Value]) {
    if has_class(claim) || !claim["spec"].is_object() {
        return;
    }
    if let Some(name) = default_class(classes) {
        claim["spec"]["storageClassName"] = json!(name);
    }
}

/// The claim's class name (`""`: none).
pub fn class_of(claim: &Value) -> &str {
    claim["metadata"]["annotations"][BETA_CLASS_ANNOTATION]
        .as_str()
        .or_else(|| claim["spec"]["storageClassName"].as_str())
        .unwrap_or_default()
}

/// A quantity in thousandths, `None` when it does not parse.
pub fn milli(q: &Value) -> Option<i128> {
    kubevirt_api::quantity::Quantity::parse(q.as_str()?)
        .ok()?
        .ceil_milli_i128()
}

/// A claim's (or a spec's) requested storage.
pub fn requested(claim: &Value) -> Option<i128> {
    milli(&claim["spec"]["resources"]["requests"]["storage"])
}

/// The spec fields of a volume that are not its source (`spec.persistentvolumesource` is the
/// rest).
const VOLUME_NON_SOURCE: &[&str] = &[
    "capacity",
    "accessModes",
    "claimRef",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "mountOptions",
    "volumeMode",
    "nodeAffinity",
    "volumeAttributesClassName",
];

/// Upstream's create-time checks of a volume's spec a client can miss.
pub fn validate_volume(pv: &Value) -> Vec<Cause> {
    let spec = &pv["spec"];
    let mut out = Vec::new();
    if spec["capacity"].as_object().is_none_or(|c| c.is_empty()) {
        out.push(cause(
            "spec.capacity",
            "FieldValueRequired",
            "Required value",
        ));
    }
    if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
        out.push(cause(
            "spec.accessModes",
            "FieldValueRequired",
            "Required value",
        ));
    }
    let sources = spec
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| !VOLUME_NON_SOURCE.contains(&k.as_str()) && !v.is_null())
        .count();
    if sources == 0 {
        out.push(cause(
            "spec",
            "FieldValueRequired",
            "Required value: must specify a volume type",
        ));
    } else if sources > 1 {
        out.push(cause(
            "spec",
            "FieldValueForbidden",
            "Forbidden: may not specify more than 1 volume type",
        ));
    }
    out
}

/// Upstream's `ValidatePersistentVolumeUpdate`: the source and the volume mode never change.
pub fn validate_volume_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut out = validate_volume(new);
    let source = |pv: &Value| {
        let mut s = pv["spec"].clone();
        if let Some(o) = s.as_object_mut() {
            o.retain(|k, v| !VOLUME_NON_SOURCE.contains(&k.as_str()) && !v.is_null());
        }
        s
    };
    if source(old) != source(new) {
        out.push(cause(
            "spec.persistentvolumesource",
            "FieldValueForbidden",
            "Forbidden: spec.persistentvolumesource is immutable after creation",
        ));
    }
    if old["spec"]["volumeMode"] != new["spec"]["volumeMode"] {
        out.push(cause(
            "volumeMode",
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: field is immutable",
                new["spec"]["volumeMode"]
            ),
        ));
    }
    out
}

/// Upstream's create-time checks of a claim's spec.
pub fn validate_claim(claim: &Value) -> Vec<Cause> {
    let spec = &claim["spec"];
    let mut out = Vec::new();
    if spec["accessModes"].as_array().is_none_or(Vec::is_empty) {
        out.push(cause(
            "spec.accessModes",
            "FieldValueRequired",
            "Required value: at least 1 access mode is required",
        ));
    }
    let storage = &spec["resources"]["requests"]["storage"];
    if storage.is_null() {
        out.push(cause(
            "spec.resources[storage]",
            "FieldValueRequired",
            "Required value",
        ));
    } else if milli(storage).is_none_or(|m| m <= 0) {
        out.push(cause(
            "spec.resources[storage]",
            "FieldValueInvalid",
            format!("Invalid value: {storage}: must be greater than zero"),
        ));
    }
    out
}

fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return vec![];
    };
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| format!("spec.{k}"))
        .collect()
}

/// Upstream's `ValidatePersistentVolumeClaimUpdate`: what may change in a claim's spec.
pub fn validate_claim_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut out = validate_claim(new);
    let mut old_spec = old["spec"].clone();
    let mut new_spec = new["spec"].clone();
    // The binder sets volumeName once.
    if old_spec["volumeName"].as_str().is_none_or(str::is_empty) {
        set_path(
            &mut old_spec,
            &["volumeName"],
            new_spec["volumeName"].clone(),
        );
    }
    // A claim without a class may get one later (retroactive default StorageClass assignment).
    if !has_class(old) && new_spec["storageClassName"].is_string() {
        set_path(
            &mut old_spec,
            &["storageClassName"],
            new_spec["storageClassName"].clone(),
        );
    }
    let bound = new["status"]["phase"] == "Bound";
    if bound {
        let storage = old_spec["resources"]["requests"]["storage"].clone();
        set_path(
            &mut new_spec,
            &["resources", "requests", "storage"],
            storage,
        );
        let vac = old_spec["volumeAttributesClassName"].clone();
        set_path(&mut new_spec, &["volumeAttributesClassName"], vac);
    }
    for spec in [&mut old_spec, &mut new_spec] {
        strip_nulls(spec);
        if spec.as_object().is_some_and(|o| o.is_empty()) {
            *spec = Value::Null;
        }
    }
    if old_spec != new_spec {
        out.push(cause(
            "spec",
            "FieldValueForbidden",
            format!(
                "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims (changed: {})",
                changed_fields(&old_spec, &new_spec).join(", ")
            ),
        ));
    }
    if let (Some(old_size), Some(new_size)) = (requested(old), requested(new))
        && new_size < old_size
        && milli(&old["status"]["capacity"]["storage"]).is_none_or(|cap| new_size <= cap)
    {
        out.push(cause(
            "spec.resources.requests.storage",
            "FieldValueForbidden",
            "Forbidden: field can not be less than status.capacity",
        ));
    }
    out
}

/// The PersistentVolumeClaimResize admission plugin: why growing `old` into `new` is refused,
/// given the claim's class (`None`: it does not exist).
pub fn refuse_resize(old: &Value, new: &Value, class: Option<&Value>) -> Option<String> {
    let (old_size, new_size) = (requested(old)?, requested(new)?);
    if new_size <= old_size {
        return None;
    }
    let allowed = new["spec"]["volumeName"]
        .as_str()
        .is_some_and(|v| !v.is_empty())
        && class.is_some_and(|c| c["allowVolumeExpansion"] == true);
    (!allowed).then(|| {
        "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize".to_string()
    })
}

/// Set `path` in `v`, making missing (null) objects on the way; a non-object on the way (a
/// malformed spec) leaves `v` as it is.
fn set_path(v: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = v;
    for p in parents {
        if node.is_null() {
            *node = json!({});
        }
        let Some(o) = node.as_object_mut() else {
            return;
        };
        node = o.entry(p.to_string()).or_insert(Value::Null);
    }
    if node.is_null() {
        *node = json!({});
    }
    if let Some(o) = node.as_object_mut() {
        o.insert(last.to_string(), value);
    }
}

/// Null fields and objects left empty by them count as unset, as in Go's structs.
fn strip_nulls(v: &mut Value) {
    if let Some(o) = v.as_object_mut() {
        o.retain(|_, x| !x.is_null());
        for x in o.values_mut() {
            strip_nulls(x);
        }
        o.retain(|_, x| x.as_object().is_none_or(|m| !m.is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, created: &str, default: bool) -> Value {
        json!({"metadata": {"name": name, "creationTimestamp": created,
            "annotations": {"storageclass.kubernetes.io/is-default-class": default.to_string()}}})
    }

    fn claim(size: &str, phase: &str) -> Value {
        json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "storageClassName": "local", "volumeMode": "Filesystem", "volumeName": "pv1",
            "resources": {"requests": {"storage": size}}},
            "status": {"phase": phase, "capacity": {"storage": "1Gi"}}})
    }

    #[test]
    fn the_newest_default_class_wins() {
        let classes = [
            class("old", "2026-01-01T00:00:00Z", true),
            class("new", "2026-02-01T00:00:00Z", true),
            class("newest", "2026-03-01T00:00:00Z", false),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("new"));
        let mut c = json!({"spec": {"accessModes": ["ReadWriteOnce"]}});
        admit_default_class(&mut c, &classes);
        assert_eq!(c["spec"]["storageClassName"], "new");
        let mut none = json!({"spec": {"storageClassName": ""}});
        admit_default_class(&mut none, &classes);
        assert_eq!(none["spec"]["storageClassName"], "", "an empty class stays");
    }

    #[test]
    fn only_requests_of_bound_claims_change() {
        let old = claim("1Gi", "Bound");
        assert!(validate_claim_update(&old, &claim("2Gi", "Bound")).is_empty());
        let mut other = claim("1Gi", "Bound");
        other["spec"]["accessModes"] = json!(["ReadWriteMany"]);
        let errs = validate_claim_update(&old, &other);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert!(errs[0].message.contains("spec.accessModes"), "{errs:?}");
        // Unbound: the request is part of the immutable spec.
        let errs = validate_claim_update(&claim("1Gi", "Pending"), &claim("2Gi", "Pending"));
        assert_eq!(errs[0].field, "spec");
    }

    #[test]
    fn shrinking_below_capacity_is_refused() {
        let errs = validate_claim_update(&claim("2Gi", "Bound"), &claim("1Gi", "Bound"));
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.resources.requests.storage");
        assert_eq!(
            errs[0].message,
            "Forbidden: field can not be less than status.capacity"
        );
        // Back down to above the capacity (recovering from a failed expansion) is allowed.
        let mut old = claim("4Gi", "Bound");
        old["status"]["capacity"]["storage"] = json!("1Gi");
        assert!(validate_claim_update(&old, &claim("2Gi", "Bound")).is_empty());
    }

    #[test]
    fn growing_needs_an_expandable_class_and_a_bound_claim() {
        let old = claim("1Gi", "Bound");
        let new = claim("2Gi", "Bound");
        let yes = json!({"allowVolumeExpansion": true});
        assert_eq!(refuse_resize(&old, &new, Some(&yes)), None);
        assert!(refuse_resize(&old, &new, Some(&json!({}))).is_some());
        assert!(refuse_resize(&old, &new, None).is_some());
        assert_eq!(refuse_resize(&new, &old, None), None, "not a growth");
    }

    #[test]
    fn a_volume_has_one_source_that_never_changes() {
        let pv = json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "volumeMode": "Filesystem", "local": {"path": "/a"}}});
        assert!(validate_volume(&pv).is_empty());
        let mut two = pv.clone();
        two["spec"]["hostPath"] = json!({"path": "/b"});
        assert_eq!(
            validate_volume(&two)[0].message,
            "Forbidden: may not specify more than 1 volume type"
        );
        let mut moved = pv.clone();
        moved["spec"]["local"]["path"] = json!("/b");
        moved["spec"]["capacity"]["storage"] = json!("2Gi");
        let errs = validate_volume_update(&pv, &moved);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.persistentvolumesource");
        let mut grown = pv.clone();
        grown["spec"]["capacity"]["storage"] = json!("2Gi");
        assert!(validate_volume_update(&pv, &grown).is_empty());
    }

    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            "[0-9]{1,4}(Mi|Gi|m|k)?".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("resources".to_string()),
                        Just("requests".to_string()),
                        Just("storage".to_string()),
                        Just("accessModes".to_string()),
                        Just("volumeName".to_string()),
                    ],
                    inner,
                    0..3
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever a user writes into a claim's spec, the rules answer without panicking, and
        /// an update that changes nothing is never refused for immutability.
        #[test]
        fn update_rules_never_panic(old in value(), new in value(), phase in "(Bound|Pending)") {
            let wrap = |spec: &Value| json!({"spec": spec, "status": {"phase": phase}});
            let (old, new) = (wrap(&old), wrap(&new));
            let _ = validate_claim_update(&old, &new);
            let _ = refuse_resize(&old, &new, None);
            let same = validate_claim_update(&old, &old);
            proptest::prop_assert!(same.iter().all(|c| c.field != "spec"), "{:?}", same);
        }
    }

    #[test]
    fn defaults_and_required_fields() {
        let mut pv =
            json!({"spec": {"capacity": {"storage": "1Gi"}}, "status": {"phase": "Bound"}});
        defaults("PersistentVolume", &mut pv, true);
        assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pv["status"]["phase"], "Pending");
        let errs = validate_claim(&json!({"spec": {}}));
        let fields: Vec<&str> = errs.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.accessModes", "spec.resources[storage]"]);
    }
}
