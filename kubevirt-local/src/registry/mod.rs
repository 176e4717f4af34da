//! What the server serves: built-in kinds and the kinds CustomResourceDefinitions register at run
//! time. Discovery, OpenAPI, routing, subresources and printer columns all read from here.

mod builtin;
mod crd;

pub use self::crd::{CrdError, crd_status, resource_from_crd};

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A printer column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// JSONPath into the object.
    pub json_path: String,
    /// Shown only with `-o wide` when > 0.
    pub priority: i64,
    /// Description for the Table's column definition.
    pub description: String,
}

/// The scale subresource's paths.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    /// JSONPath of the desired replicas (`.spec.replicas`).
    pub spec_replicas: String,
    /// JSONPath of the observed replicas (`.status.replicas`).
    pub status_replicas: String,
    /// JSONPath of the label selector string, if any.
    pub label_selector: Option<String>,
}

/// How a resource's objects relate to what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Stored as served.
    #[default]
    Plain,
    /// events.k8s.io/v1 Events: stored as core/v1 Events, converted on the way in and out.
    EventsV1,
}

/// One served resource (all versions share storage; conversion is `None`, as in every KubeVirt CRD).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// API group (empty for core).
    pub group: String,
    /// Served versions, storage version first.
    pub versions: Vec<String>,
    /// Deprecated versions with their warning.
    pub deprecated: BTreeMap<String, String>,
    /// Plural name (the URL segment).
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Whether `/status` exists (and the main endpoint ignores `.status`).
    pub status: bool,
    /// The scale subresource, if any.
    pub scale: Option<Scale>,
    /// Printer columns (besides Name).
    pub columns: Vec<Column>,
    /// The structural openAPIV3Schema per version, when the kind has one.
    pub schemas: BTreeMap<String, Value>,
    /// Fields usable in field selectors (besides metadata.name/namespace).
    pub selectable_fields: Vec<String>,
    /// Built-in kind: strategic merge patch allowed.
    pub builtin: bool,
    /// How objects map to storage.
    pub view: View,
}

impl Resource {
    /// The storage key prefix: `group/plural`.
    pub fn storage_name(&self) -> String {
        match self.view {
            View::EventsV1 => "/events".to_string(),
            View::Plain => format!("{}/{}", self.group, self.plural),
        }
    }

    /// An incoming object in its stored form.
    pub fn to_storage(&self, v: Value) -> Value {
        match self.view {
            View::EventsV1 => crate::semantics::events::from_events_v1(&v),
            View::Plain => v,
        }
    }

    /// A stored object as this resource presents it.
    pub fn present(&self, v: Value) -> Value {
        match self.view {
            View::EventsV1 => crate::semantics::events::to_events_v1(&v),
            View::Plain => v,
        }
    }

    /// A stored object as this resource presents it, borrowed unless it must be converted.
    pub fn present_ref<'v>(&self, v: &'v Value) -> std::borrow::Cow<'v, Value> {
        match self.view {
            View::EventsV1 => std::borrow::Cow::Owned(crate::semantics::events::to_events_v1(v)),
            View::Plain => std::borrow::Cow::Borrowed(v),
        }
    }

    /// `plural.group` (or `plural` for core), as error messages name it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `group/version` (or `version` for core).
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The schema of `version`, if any.
    pub fn schema(&self, version: &str) -> Option<&Value> {
        self.schemas.get(version)
    }
}

/// Every served resource.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: BTreeMap<(String, String), Arc<Resource>>,
}

impl Registry {
    /// The built-in kinds only.
    pub fn builtin() -> Self {
        let mut r = Self::default();
        for res in builtin::resources() {
            r.insert(res);
        }
        r
    }

    /// Add (or replace) a resource.
    pub fn insert(&mut self, res: Resource) {
        self.resources
            .insert((res.group.clone(), res.plural.clone()), Arc::new(res));
    }

    /// A resource by group, version and plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.resources
            .get(&(group.to_string(), plural.to_string()))
            .filter(|r| r.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// A resource by group and kind.
    pub fn find_kind(&self, group: &str, kind: &str) -> Option<Arc<Resource>> {
        self.resources
            .values()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.values()
    }

    /// Served group/versions: `(group, versions)`, core first.
    pub fn group_versions(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.resources.values() {
            let entry = out.entry(r.group.clone()).or_default();
            for v in &r.versions {
                if !entry.contains(v) {
                    entry.push(v.clone());
                }
            }
        }
        out
    }
}
