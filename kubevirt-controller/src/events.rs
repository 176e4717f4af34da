//! Kubernetes Events (core/v1) the controllers record about the objects they act on, written as
//! client-go's event recorder writes them, so `kubectl describe` and `kubectl get events` show
//! them as they do for upstream's components: `source.component` and `reportingComponent` name
//! the controller (`virtualmachine-controller`, `virt-handler`, ...), `source.host` the node for
//! a node agent, and `involvedObject` carries the object's uid and resourceVersion.
//!
//! Repeats are aggregated like client-go's correlator does: the same type, reason and message
//! about the same object (uid, not resourceVersion) from the same source bumps the first Event's
//! `count` and `lastTimestamp` instead of adding one. Best effort: a failed write is logged and
//! never fails a sync.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};

/// How many distinct events a recorder remembers for aggregation (client-go's LRU size).
const CACHE_SIZE: usize = 4096;
/// Messages are cut to this many characters (client-go's limit).
const MESSAGE_LIMIT: usize = 1024;

/// `Normal` or `Warning`, as core/v1 spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something needs attention.
    Warning,
}

impl EventType {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event to tell: what a controller's decision produces (pure, so tests can check it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub type_: EventType,
    /// Upstream's reason (`SuccessfulCreate`, `Started`, ...).
    pub reason: &'static str,
    /// Upstream's message.
    pub message: String,
}

impl Note {
    /// A Normal event.
    pub fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Note {
            type_: EventType::Normal,
            reason,
            message: message.into(),
        }
    }

    /// A Warning event.
    pub fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Note {
            type_: EventType::Warning,
            reason,
            message: message.into(),
        }
    }
}

/// What identifies an event for aggregation (client-go's `getEventKey`: no resourceVersion).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    api_version: String,
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    type_: EventType,
    reason: String,
    message: String,
}

impl Key {
    /// The key of `note` about `object`.
    pub fn of(object: &ObjectReference, note: &Note) -> Self {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        Key {
            api_version: s(&object.api_version),
            kind: s(&object.kind),
            namespace: s(&object.namespace),
            name: s(&object.name),
            uid: s(&object.uid),
            type_: note.type_,
            reason: note.reason.to_string(),
            message: note.message.clone(),
        }
    }
}

/// The write an event needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A new Event.
    Create,
    /// The Event `name` told this before: its count becomes `count`.
    Bump {
        /// The Event's name.
        name: String,
        /// Its new count.
        count: i32,
    },
}

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    count: i32,
    used: u64,
}

/// The events a recorder wrote, for aggregating repeats (least recently used dropped first).
#[derive(Debug, Default)]
pub struct Cache {
    seen: HashMap<Key, Seen>,
    tick: u64,
}

impl Cache {
    /// The write `key` needs now.
    pub fn write_for(&self, key: &Key) -> Write {
        match self.seen.get(key) {
            Some(s) => Write::Bump {
                name: s.name.clone(),
                count: s.count.saturating_add(1),
            },
            None => Write::Create,
        }
    }

    /// `key` is written as Event `name` with `count`.
    pub fn written(&mut self, key: Key, name: String, count: i32) {
        self.tick += 1;
        if !self.seen.contains_key(&key)
            && self.seen.len() >= CACHE_SIZE
            && let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(
            key,
            Seen {
                name,
                count,
                used: self.tick,
            },
        );
    }

    /// `key`'s Event is gone from the server: the next one is created anew.
    pub fn forget(&mut self, key: &Key) {
        self.seen.remove(key);
    }
}

/// Records events from one component (cheap to clone; clones share the aggregation cache).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    cache: Arc<Mutex<Cache>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.component)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder for `component` (`source.component` and `reportingComponent`).
    pub fn new(client: Client, component: impl Into<String>) -> Self {
        Recorder {
            client,
            component: component.into(),
            host: None,
            cache: Arc::default(),
        }
    }

    /// The same, from a node (`source.host`, `reportingInstance`), as virt-handler's are.
    pub fn on_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Tells `note` about `obj`; a failure is only logged.
    pub async fn record<K: Resource<DynamicType = ()>>(&self, obj: &K, note: &Note) {
        self.record_ref(&reference(obj), note).await;
    }

    /// Tells `note` about the object `involved` names; a failure is only logged.
    pub async fn record_ref(&self, involved: &ObjectReference, note: &Note) {
        let mut note = note.clone();
        if note.message.chars().count() > MESSAGE_LIMIT {
            note.message = note.message.chars().take(MESSAGE_LIMIT).collect();
        }
        let key = Key::of(involved, &note);
        let write = self.lock().write_for(&key);
        let namespace = involved
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let now = Time(jiff::Timestamp::now());
        if let Write::Bump { name, count } = &write {
            let patch = serde_json::json!({"count": count, "lastTimestamp": now});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.lock().written(key, name.clone(), *count);
                    return;
                }
                // Gone (expired or deleted): told anew below.
                Err(kube::Error::Api(e)) if e.code == 404 => self.lock().forget(&key),
                Err(e) => return self.failed(&note, &e),
            }
        }
        let event = self.event(involved, &note, &namespace, now);
        match api.create(&PostParams::default(), &event).await {
            Ok(made) => self.lock().written(key, made.name_any(), 1),
            Err(e) => self.failed(&note, &e),
        }
    }

    fn event(&self, involved: &ObjectReference, note: &Note, namespace: &str, now: Time) -> Event {
        let name = format!(
            "{}.{:x}",
            involved.name.as_deref().unwrap_or(&self.component),
            now.0.as_nanosecond()
        );
        Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            involved_object: involved.clone(),
            type_: Some(note.type_.as_str().into()),
            reason: Some(note.reason.into()),
            message: Some(note.message.clone()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: self.host.clone(),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.host.clone().unwrap_or_else(|| self.component.clone())),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            ..Default::default()
        }
    }

    fn failed(&self, note: &Note, e: &kube::Error) {
        tracing::warn!(component = %self.component, reason = note.reason, error = %e,
            "recording an event failed");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves the cache usable (at worst a repeat is new).
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `involvedObject` of an event about `obj`.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into()),
        kind: Some(K::kind(&()).into()),
        namespace: obj.meta().namespace.clone(),
        name: obj.meta().name.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(rv: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("kubevirt.io/v1".into()),
            kind: Some("VirtualMachine".into()),
            namespace: Some("default".into()),
            name: Some("vm".into()),
            uid: Some("u1".into()),
            resource_version: Some(rv.into()),
            field_path: None,
        }
    }

    #[test]
    fn a_repeat_bumps_the_first_event_even_at_a_new_resource_version() {
        let mut cache = Cache::default();
        let note = Note::normal("SuccessfulCreate", "made it");
        let key = Key::of(&obj("1"), &note);
        assert_eq!(cache.write_for(&key), Write::Create);
        cache.written(key, "vm.1".into(), 1);
        let again = Key::of(&obj("7"), &note);
        assert_eq!(
            cache.write_for(&again),
            Write::Bump {
                name: "vm.1".into(),
                count: 2
            }
        );
        cache.written(again.clone(), "vm.1".into(), 2);
        assert_eq!(
            cache.write_for(&again),
            Write::Bump {
                name: "vm.1".into(),
                count: 3
            }
        );
    }

    #[test]
    fn another_message_reason_type_or_object_is_a_new_event() {
        let mut cache = Cache::default();
        let note = Note::normal("SuccessfulCreate", "made it");
        cache.written(Key::of(&obj("1"), &note), "vm.1".into(), 1);
        let others = [
            Note::normal("SuccessfulCreate", "made another"),
            Note::normal("SuccessfulDelete", "made it"),
            Note::warning("SuccessfulCreate", "made it"),
        ];
        for other in others {
            assert_eq!(cache.write_for(&Key::of(&obj("1"), &other)), Write::Create);
        }
        let mut new_uid = obj("1");
        new_uid.uid = Some("u2".into());
        assert_eq!(cache.write_for(&Key::of(&new_uid, &note)), Write::Create);
    }

    #[test]
    fn a_forgotten_event_is_created_anew() {
        let mut cache = Cache::default();
        let key = Key::of(&obj("1"), &Note::normal("Started", "up"));
        cache.written(key.clone(), "vm.1".into(), 4);
        cache.forget(&key);
        assert_eq!(cache.write_for(&key), Write::Create);
    }

    #[test]
    fn the_cache_drops_the_least_recently_used() {
        let mut cache = Cache::default();
        let keys: Vec<Key> = (0..=CACHE_SIZE)
            .map(|i| Key::of(&obj("1"), &Note::normal("R", format!("m{i}"))))
            .collect();
        for k in &keys[..CACHE_SIZE] {
            cache.written(k.clone(), "n".into(), 1);
        }
        // The first is used again, so the second is the oldest.
        cache.written(keys[0].clone(), "n".into(), 2);
        cache.written(keys[CACHE_SIZE].clone(), "n".into(), 1);
        assert_eq!(cache.seen.len(), CACHE_SIZE);
        assert_ne!(cache.write_for(&keys[0]), Write::Create);
        assert_eq!(cache.write_for(&keys[1]), Write::Create);
    }
}
