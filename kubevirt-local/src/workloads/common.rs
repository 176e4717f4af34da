//! What the workload controllers share: label selectors, owner references (adoption and
//! release, as upstream's `ControllerRefManager`), pod readiness, template hashes, and the
//! error of one sync.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The API server refused or failed a request.
    #[error("{what} for {kind} {namespace}/{name}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The synced object's kind.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: Box<kube::Error>,
    },
    /// The object's spec cannot be acted on; `field` names the part.
    #[error("{kind} {namespace}/{name}: {field}: {message}")]
    Invalid {
        /// The synced object's kind.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The field path (`spec.selector`).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The synced object's identity, for errors.
#[derive(Debug, Clone)]
pub struct Target {
    pub(crate) kind: &'static str,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl Target {
    pub(crate) fn of<K: ResourceExt>(kind: &'static str, obj: &K) -> Self {
        Self {
            kind,
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
        }
    }

    pub(crate) fn err(&self, what: &'static str) -> impl FnOnce(kube::Error) -> SyncError + use<> {
        let t = self.clone();
        move |source| SyncError::Api {
            what,
            kind: t.kind,
            namespace: t.namespace,
            name: t.name,
            source: Box::new(source),
        }
    }

    pub(crate) fn invalid(&self, field: &'static str, message: impl Into<String>) -> SyncError {
        SyncError::Invalid {
            kind: self.kind,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            field,
            message: message.into(),
        }
    }
}

/// A request about an object that is gone, or changed meanwhile (409), is no error: the watch
/// brings the new state and the next sync acts on it.
pub(crate) fn tolerate_gone<T>(r: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Does `selector` select `labels`? An empty selector selects nothing here (apps/v1 requires
/// one; selecting everything would adopt every pod of the namespace).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector.match_labels.as_ref();
    let exprs = selector.match_expressions.as_deref().unwrap_or_default();
    if by_label.is_none_or(BTreeMap::is_empty) && exprs.is_empty() {
        return false;
    }
    by_label
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && exprs.iter().all(|e| {
            let have = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => have.is_some_and(|h| values.contains(h)),
                "NotIn" => have.is_none_or(|h| !values.contains(h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

/// The owner reference a controller puts on what it creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The controller owner reference of `meta`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Adopt the orphans `selector` selects and release the owned objects it no longer selects
/// (upstream `ClaimObjects`); returns the objects `owner` controls afterwards.
pub(crate) async fn claim<O, C>(
    api: &Api<C>,
    owner: &O,
    selector: &LabelSelector,
    candidates: Vec<C>,
    t: &Target,
) -> Result<Vec<C>, SyncError>
where
    O: Resource<DynamicType = ()>,
    C: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let owner_deleting = owner.meta().deletion_timestamp.is_some();
    let mut owned = Vec::new();
    for c in candidates {
        let labels = c.meta().labels.clone().unwrap_or_default();
        let matches = selects(selector, &labels);
        let deleting = c.meta().deletion_timestamp.is_some();
        let name = c.meta().name.clone().unwrap_or_default();
        let rv = c.meta().resource_version.clone();
        let refs: Vec<OwnerReference> = c.meta().owner_references.clone().unwrap_or_default();
        match controller_of(c.meta()) {
            Some(r) if r.uid == uid => {
                if matches || deleting {
                    owned.push(c);
                } else {
                    // Release: drop our reference.
                    let kept: Vec<_> = refs.into_iter().filter(|r| r.uid != uid).collect();
                    // An empty list is left out, as Go's JSON omits it.
                    let kept = (!kept.is_empty()).then_some(kept);
                    let patch =
                        json!({"metadata": {"ownerReferences": kept, "resourceVersion": rv}});
                    tolerate_gone(
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await,
                    )
                    .map_err(t.err("releasing an object the selector no longer selects"))?;
                }
            }
            None if matches && !deleting && !owner_deleting => {
                let mut refs = refs;
                refs.push(controller_ref(owner));
                let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": rv}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(adopted) => owned.push(adopted),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(t.err("adopting an orphan")(e)),
                }
            }
            _ => {}
        }
    }
    Ok(owned)
}

/// Is the pod's `Ready` condition `True`?
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Ready for at least `min_ready_seconds` (upstream `IsPodAvailable`).
pub fn pod_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    if !pod_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    let since = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    since.is_some_and(|s| s + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now)
}

/// A pod that counts toward a controller's replicas: not finished and not being deleted.
pub fn pod_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// A short stable hash of a pod template (upstream's `pod-template-hash`): FNV-1a over its JSON,
/// spelled in the alphabet Kubernetes uses for generated names.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let text = serde_json::to_string(template).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut v = u64::from(h);
    loop {
        out.push(char::from(ALPHABET[(v % 27) as usize]));
        v /= 27;
        if v == 0 {
            break;
        }
    }
    out
}

/// A pod for `owner` from `template`, named `{prefix}-xxxxx` by the server.
pub fn pod_from_template<O: Resource<DynamicType = ()>>(
    owner: &O,
    prefix: &str,
    template: &PodTemplateSpec,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: owner.meta().namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(owner)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Delete `name` (gone already is fine).
pub(crate) async fn delete<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    tolerate_gone(api.delete(name, &DeleteParams::background()).await)
}

/// Write `status` through the status subresource if it differs from `current`.
pub(crate) async fn write_status<K>(
    api: &Api<K>,
    name: &str,
    current: Option<serde_json::Value>,
    status: serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if current.as_ref() == Some(&status) {
        return Ok(());
    }
    tolerate_gone(
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": status})),
        )
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels = BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            ("tier".into(), "fe".into()),
        ]);
        assert!(selects(
            &sel(json!({"matchLabels": {"app": "web"}})),
            &labels
        ));
        assert!(!selects(
            &sel(json!({"matchLabels": {"app": "db"}})),
            &labels
        ));
        assert!(selects(
            &sel(
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]})
            ),
            &labels
        ));
        assert!(!selects(
            &sel(
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})
            ),
            &labels
        ));
        assert!(
            !selects(&sel(json!({})), &labels),
            "an empty selector adopts nothing"
        );
    }

    #[test]
    fn template_hashes_are_stable_and_differ_by_template() {
        let a: PodTemplateSpec =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "a"}]}}))
                .unwrap();
        let b: PodTemplateSpec =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "b"}]}}))
                .unwrap();
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert!(template_hash(&a).bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    proptest! {
        /// A user's selector never panics and In/NotIn are each other's negation.
        #[test]
        fn in_and_not_in_are_negations(key in "[a-z]{1,2}", value in proptest::option::of("[a-z]{0,2}"),
                                       values in proptest::collection::vec("[a-z]{0,2}", 0..3)) {
            let labels: BTreeMap<String, String> = value.iter().map(|v| (key.clone(), v.clone())).collect();
            let e = |op: &str| sel(json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]}));
            prop_assert_eq!(selects(&e("In"), &labels), !selects(&e("NotIn"), &labels));
            prop_assert_eq!(selects(&e("Exists"), &labels), !selects(&e("DoesNotExist"), &labels));
        }
    }
}
