//! Authorisation: kube-apiserver's RBAC authorizer over an in-memory, indexed view of the stored
//! Roles, ClusterRoles, RoleBindings and ClusterRoleBindings. The view is loaded once and then
//! kept current from the store's own change stream (the same feed watches and garbage collection
//! use), so a decision reads no database: it looks up the bindings of the user's name and of
//! each of its groups, and matches the rules of the roles they grant. ClusterRole aggregation is
//! applied in the view, and written back to the aggregating ClusterRoles after every write, as
//! kube-controller-manager's aggregation controller does.

use super::State;
use super::authn::UserInfo;
use crate::error::ApiError;
use crate::semantics::rbac::{self, Attributes, MASTERS};
use crate::storage::{Event, EventType, ObjectKey, StoreError};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Storage names of the four RBAC kinds.
pub const ROLES: &str = "rbac.authorization.k8s.io/roles";
/// ClusterRoles' storage name.
pub const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles";
/// RoleBindings' storage name.
pub const ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/rolebindings";
/// ClusterRoleBindings' storage name.
pub const CLUSTER_ROLE_BINDINGS: &str = "rbac.authorization.k8s.io/clusterrolebindings";
const KINDS: [&str; 4] = [ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS];

/// The authorizer: the stored RBAC objects, their index, and the feed that keeps both current.
#[derive(Debug)]
pub struct Authorizer {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    changes: broadcast::Receiver<Arc<Event>>,
    /// Reload everything from the store: at start, and when the feed fell behind.
    resync: bool,
    objects: BTreeMap<ObjectKey, Value>,
    /// The index, rebuilt from `objects` when they changed.
    index: Option<Arc<Index>>,
    /// ClusterRoles changed since aggregation was last written back.
    aggregation_due: bool,
}

/// Who may do what: roles by name (cluster roles aggregated) and grants by subject.
#[derive(Debug, Default)]
pub struct Index {
    roles: HashMap<(String, String), Vec<Value>>,
    cluster_roles: HashMap<String, Vec<Value>>,
    /// Grants by `user:NAME` / `group:NAME` (service accounts are users).
    grants: HashMap<String, Vec<Grant>>,
}

#[derive(Debug)]
struct Grant {
    /// The RoleBinding's namespace; `None` for a ClusterRoleBinding.
    namespace: Option<String>,
    /// A namespaced Role (of `namespace`) rather than a ClusterRole.
    role_is_namespaced: bool,
    role: String,
}

impl Index {
    /// Index `objects` (Roles, ClusterRoles and their bindings, by their storage keys; see
    /// [`ROLES`] and its siblings), aggregating cluster roles.
    pub fn build(objects: &BTreeMap<ObjectKey, Value>) -> Self {
        let of = |kind: &'static str| objects.iter().filter(move |(k, _)| k.resource == kind);
        let mut cluster_roles: Vec<Value> = of(CLUSTER_ROLES).map(|(_, v)| v.clone()).collect();
        rbac::aggregate_all(&mut cluster_roles);
        let rules = |v: &Value| v["rules"].as_array().cloned().unwrap_or_default();
        let mut index = Index {
            roles: of(ROLES)
                .map(|(k, v)| ((k.namespace.clone(), k.name.clone()), rules(v)))
                .collect(),
            cluster_roles: cluster_roles
                .iter()
                .filter_map(|r| Some((r["metadata"]["name"].as_str()?.to_string(), rules(r))))
                .collect(),
            grants: HashMap::new(),
        };
        for (k, b) in of(ROLE_BINDINGS).chain(of(CLUSTER_ROLE_BINDINGS)) {
            let namespaced = k.resource == ROLE_BINDINGS;
            let role = b["roleRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let role_is_namespaced = namespaced && b["roleRef"]["kind"] == "Role";
            for s in b["subjects"].as_array().into_iter().flatten() {
                let name = s["name"].as_str().unwrap_or_default();
                let subject = match s["kind"].as_str() {
                    Some("User") => format!("user:{name}"),
                    Some("Group") => format!("group:{name}"),
                    Some("ServiceAccount") => {
                        let ns = s["namespace"]
                            .as_str()
                            .filter(|n| !n.is_empty())
                            .unwrap_or(&k.namespace);
                        format!("user:system:serviceaccount:{ns}:{name}")
                    }
                    _ => continue,
                };
                index.grants.entry(subject).or_default().push(Grant {
                    namespace: namespaced.then(|| k.namespace.clone()),
                    role_is_namespaced,
                    role: role.clone(),
                });
            }
        }
        index
    }

    /// The rules of Role `name` in `namespace`, or of ClusterRole `name` (aggregated) when
    /// `namespace` is `None`; none if there is no such role.
    pub fn rules_of(&self, namespace: Option<&str>, name: &str) -> Vec<Value> {
        match namespace {
            Some(ns) => self.roles.get(&(ns.to_string(), name.to_string())),
            None => self.cluster_roles.get(name),
        }
        .cloned()
        .unwrap_or_default()
    }

    /// Every rule granted to `user` in `groups` in `namespace` (cluster-wide grants included):
    /// what SelfSubjectRulesReview lists.
    pub fn rules_for(&self, user: &str, groups: &[String], namespace: &str) -> Vec<Value> {
        let subjects = std::iter::once(format!("user:{user}"))
            .chain(groups.iter().map(|g| format!("group:{g}")));
        let mut out: Vec<Value> = Vec::new();
        for subject in subjects {
            for g in self.grants.get(&subject).into_iter().flatten() {
                if g.namespace.as_deref().is_some_and(|ns| ns != namespace) {
                    continue;
                }
                let ns = g
                    .role_is_namespaced
                    .then(|| g.namespace.as_deref().unwrap_or_default());
                for rule in self.rules_of(ns, &g.role) {
                    if !out.contains(&rule) {
                        out.push(rule);
                    }
                }
            }
        }
        out
    }

    /// Whether `a` is allowed, and if so by which role (upstream's reason text).
    pub fn allows(&self, a: &Attributes) -> Option<String> {
        if a.groups.iter().any(|g| g == MASTERS) {
            return Some(format!("{MASTERS} may do anything"));
        }
        let subjects = std::iter::once(format!("user:{}", a.user))
            .chain(a.groups.iter().map(|g| format!("group:{g}")));
        for subject in subjects {
            for g in self.grants.get(&subject).into_iter().flatten() {
                if let Some(ns) = &g.namespace
                    && *ns != a.namespace
                {
                    continue;
                }
                let rules = if g.role_is_namespaced {
                    let ns = g.namespace.clone().unwrap_or_default();
                    self.roles.get(&(ns, g.role.clone()))
                } else {
                    self.cluster_roles.get(&g.role)
                };
                if rules.into_iter().flatten().any(|r| rbac::rule_allows(r, a)) {
                    let kind = if g.role_is_namespaced {
                        "Role"
                    } else {
                        "ClusterRole"
                    };
                    let via = match &g.namespace {
                        Some(ns) => format!("RoleBinding in namespace {ns:?}"),
                        None => "ClusterRoleBinding".to_string(),
                    };
                    return Some(format!("RBAC: allowed by {via} of {kind} {:?}", g.role));
                }
            }
        }
        None
    }
}

impl Authorizer {
    /// An authorizer fed by `store`'s changes from now on; it loads the stored objects on first use.
    pub fn new(store: &crate::storage::Store) -> Self {
        Self {
            inner: Mutex::new(Inner {
                changes: store.subscribe(),
                resync: true,
                objects: BTreeMap::new(),
                index: None,
                aggregation_due: true,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current index (after taking in every change committed so far).
    pub fn index(&self, state: &State) -> Result<Arc<Index>, ApiError> {
        let mut inner = self.lock();
        inner.catch_up(state)?;
        if inner.index.is_none() {
            inner.index = Some(Arc::new(Index::build(&inner.objects)));
        }
        Ok(inner.index.clone().unwrap_or_default())
    }

    /// Write the aggregated rules into every aggregating ClusterRole whose stored rules differ,
    /// when ClusterRoles changed since the last time (called after every write).
    pub fn reconcile_aggregation(&self, state: &State) -> Result<(), ApiError> {
        let due: Vec<(ObjectKey, Value)> = {
            let mut inner = self.lock();
            inner.catch_up(state)?;
            if !std::mem::take(&mut inner.aggregation_due) {
                return Ok(());
            }
            let mut roles: Vec<Value> = inner
                .objects
                .iter()
                .filter(|(k, _)| k.resource == CLUSTER_ROLES)
                .map(|(_, v)| v.clone())
                .collect();
            let before = roles.clone();
            rbac::aggregate_all(&mut roles);
            roles
                .into_iter()
                .zip(before)
                .filter(|(after, before)| {
                    after.get("aggregationRule").is_some() && after["rules"] != before["rules"]
                })
                .filter_map(|(after, _)| {
                    let name = after["metadata"]["name"].as_str()?.to_string();
                    Some((
                        ObjectKey::new(CLUSTER_ROLES, "", name),
                        after["rules"].clone(),
                    ))
                })
                .collect()
        };
        for (key, rules) in due {
            state.store.write(|t| -> Result<(), StoreError> {
                if let Some(mut role) = t.get(&key)?
                    && role["rules"] != rules
                {
                    role["rules"] = rules;
                    t.put(&key, role, EventType::Modified)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

impl Inner {
    fn catch_up(&mut self, state: &State) -> Result<(), ApiError> {
        loop {
            match self.changes.try_recv() {
                Ok(e) if KINDS.contains(&e.key.resource.as_str()) => {
                    if e.key.resource == CLUSTER_ROLES {
                        self.aggregation_due = true;
                    }
                    if e.kind == EventType::Deleted {
                        self.objects.remove(&e.key);
                    } else {
                        self.objects.insert(e.key.clone(), e.object.clone());
                    }
                    self.index = None;
                }
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync = true,
                Err(_) => break,
            }
        }
        if std::mem::take(&mut self.resync) {
            let mut objects = BTreeMap::new();
            for kind in KINDS {
                let (items, _) = state.store.list(kind, None)?;
                for o in items {
                    let meta = &o["metadata"];
                    let key = ObjectKey::new(
                        kind,
                        meta["namespace"].as_str().unwrap_or_default(),
                        meta["name"].as_str().unwrap_or_default(),
                    );
                    objects.insert(key, o);
                }
            }
            self.objects = objects;
            self.index = None;
            self.aggregation_due = true;
        }
        Ok(())
    }
}

/// Allow `a` for `user`, or the 403 Status kube-apiserver sends.
pub fn authorize(state: &State, user: &UserInfo, a: &mut Attributes) -> Result<(), ApiError> {
    a.user.clone_from(&user.name);
    a.groups.clone_from(&user.groups);
    if state.authorizer.index(state)?.allows(a).is_some() {
        Ok(())
    } else {
        Err(forbidden(a))
    }
}

/// The 403 of a denied request, with upstream's wording and details.
pub fn forbidden(a: &Attributes) -> ApiError {
    let mut e = ApiError::forbidden(rbac::forbidden_message(a));
    if !a.resource.is_empty() {
        let mut d = serde_json::json!({"group": a.api_group, "kind": a.resource});
        if !a.name.is_empty() {
            d["name"] = serde_json::json!(a.name);
        }
        e.details = Some(d);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects(list: Vec<(&str, &str, &str, Value)>) -> BTreeMap<ObjectKey, Value> {
        list.into_iter()
            .map(|(kind, ns, name, mut v)| {
                v["metadata"]["name"] = json!(name);
                if !ns.is_empty() {
                    v["metadata"]["namespace"] = json!(ns);
                }
                (ObjectKey::new(kind, ns, name), v)
            })
            .collect()
    }

    fn asks(user: &str, groups: &[&str], verb: &str, resource: &str, ns: &str) -> Attributes {
        Attributes {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            verb: verb.into(),
            api_group: "kubevirt.io".into(),
            resource: resource.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_index_grants_by_user_group_and_service_account_within_binding_scope() {
        let index = Index::build(&objects(vec![
            (
                CLUSTER_ROLES,
                "",
                "vm-reader",
                json!({"rules": [{"verbs": ["get", "list"], "apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"]}]}),
            ),
            (
                ROLES,
                "a",
                "vm-writer",
                json!({"rules": [{"verbs": ["*"], "apiGroups": ["kubevirt.io"], "resources": ["*"]}]}),
            ),
            (
                ROLE_BINDINGS,
                "a",
                "r1",
                json!({"roleRef": {"kind": "ClusterRole", "name": "vm-reader"},
                "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "bot"}]}),
            ),
            (
                ROLE_BINDINGS,
                "a",
                "w1",
                json!({"roleRef": {"kind": "Role", "name": "vm-writer"},
                "subjects": [{"kind": "Group", "name": "writers"}]}),
            ),
            (
                CLUSTER_ROLE_BINDINGS,
                "",
                "all",
                json!({"roleRef": {"kind": "ClusterRole", "name": "vm-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "auditor", "namespace": "ops"}]}),
            ),
        ]));
        let yes = |a: Attributes| assert!(index.allows(&a).is_some(), "{a:?}");
        let no = |a: Attributes| assert!(index.allows(&a).is_none(), "{a:?}");
        yes(asks("alice", &[], "list", "virtualmachines", "a"));
        no(asks("alice", &[], "list", "virtualmachines", "b"));
        no(asks("alice", &[], "list", "virtualmachines", ""));
        no(asks("alice", &[], "delete", "virtualmachines", "a"));
        yes(asks(
            "system:serviceaccount:a:bot",
            &[],
            "get",
            "virtualmachines",
            "a",
        ));
        no(asks(
            "system:serviceaccount:b:bot",
            &[],
            "get",
            "virtualmachines",
            "a",
        ));
        yes(asks(
            "bob",
            &["writers"],
            "delete",
            "virtualmachineinstances",
            "a",
        ));
        no(asks(
            "bob",
            &["writers"],
            "delete",
            "virtualmachineinstances",
            "b",
        ));
        yes(asks(
            "system:serviceaccount:ops:auditor",
            &[],
            "list",
            "virtualmachines",
            "",
        ));
        yes(asks(
            "system:serviceaccount:ops:auditor",
            &[],
            "list",
            "virtualmachines",
            "z",
        ));
        yes(asks("root", &[MASTERS], "delete", "nodes", ""));
    }

    #[test]
    fn aggregated_cluster_roles_grant_their_members_rules() {
        let index = Index::build(&objects(vec![
            (
                CLUSTER_ROLES,
                "",
                "view",
                json!({"aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}),
            ),
            (
                CLUSTER_ROLES,
                "",
                "kubevirt.io:view",
                json!({"metadata": {"labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"]}]}),
            ),
            (
                ROLE_BINDINGS,
                "a",
                "v",
                json!({"roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "alice"}]}),
            ),
        ]));
        assert!(
            index
                .allows(&asks("alice", &[], "watch", "virtualmachines", "a"))
                .is_some()
        );
        assert!(
            index
                .allows(&asks("alice", &[], "create", "virtualmachines", "a"))
                .is_none()
        );
    }
}
