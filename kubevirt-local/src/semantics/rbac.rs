//! RBAC evaluation as kube-apiserver's RBAC authorizer does it, over the stored Role,
//! ClusterRole, RoleBinding and ClusterRoleBinding objects (JSON): rule matching (verbs, API
//! groups, resources and `*/subresource`, resourceNames, nonResourceURLs with `*` suffixes),
//! subjects (users, groups, service accounts), ClusterRole aggregation, and upstream's 403
//! wording. Pure functions; the server supplies the objects.

use serde_json::Value;

/// Who asks, and for what.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// The user name (`system:serviceaccount:NS:NAME` for service accounts).
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, ...
    pub verb: String,
    /// The API group (`""` for core).
    pub api_group: String,
    /// The resource (plural); empty for a non-resource request.
    pub resource: String,
    /// The subresource, if any.
    pub subresource: String,
    /// The namespace, if the request is namespaced.
    pub namespace: String,
    /// The object's name, if the request names one.
    pub name: String,
    /// The path of a non-resource request (`/healthz`).
    pub path: String,
}

impl Attributes {
    fn is_resource(&self) -> bool {
        !self.resource.is_empty()
    }
}

/// The group whose members may do anything (`kubeadm`'s admin, `up`'s kubeconfig).
pub const MASTERS: &str = "system:masters";

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn has(list: &Value, want: &str) -> bool {
    strings(list).any(|s| s == "*" || s == want)
}

/// Whether one PolicyRule allows `a`.
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&rule["verbs"], &a.verb) {
        return false;
    }
    if !a.is_resource() {
        return strings(&rule["nonResourceURLs"]).any(|u| {
            u == "*" || u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
        });
    }
    if !has(&rule["apiGroups"], &a.api_group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resource_ok = strings(&rule["resources"]).any(|r| {
        r == "*"
            || r == combined
            || (!a.subresource.is_empty()
                && r.strip_prefix("*/").is_some_and(|s| s == a.subresource))
    });
    if !resource_ok {
        return false;
    }
    let names: Vec<&str> = strings(&rule["resourceNames"]).collect();
    names.is_empty() || (!a.name.is_empty() && names.contains(&a.name.as_str()))
}

/// Whether a binding's subject (in a binding of `binding_ns`) is the asking identity.
pub fn subject_matches(subject: &Value, binding_ns: &str, a: &Attributes) -> bool {
    let name = subject["name"].as_str().unwrap_or_default();
    match subject["kind"].as_str() {
        Some("User") => name == a.user,
        Some("Group") => a.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            a.user == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Every stored RBAC object the decision reads.
#[derive(Debug, Default)]
pub struct Policy {
    /// Roles (namespaced).
    pub roles: Vec<Value>,
    /// ClusterRoles, aggregation already applied (see [`aggregate`]).
    pub cluster_roles: Vec<Value>,
    /// RoleBindings (namespaced).
    pub role_bindings: Vec<Value>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<Value>,
}

fn named<'a>(list: &'a [Value], ns: Option<&str>, name: &str) -> Option<&'a Value> {
    list.iter().find(|o| {
        o["metadata"]["name"].as_str() == Some(name)
            && ns.is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
    })
}

impl Policy {
    /// Whether `a` is allowed.
    pub fn allows(&self, a: &Attributes) -> bool {
        if a.groups.iter().any(|g| g == MASTERS) {
            return true;
        }
        let rules_allow = |role: Option<&Value>| {
            role.is_some_and(|r| strings_rules(r).any(|rule| rule_allows(rule, a)))
        };
        for b in &self.cluster_role_bindings {
            if strings_subjects(b).any(|s| subject_matches(s, "", a))
                && rules_allow(named(&self.cluster_roles, None, role_ref(b)))
            {
                return true;
            }
        }
        if a.namespace.is_empty() {
            return false;
        }
        for b in &self.role_bindings {
            let ns = b["metadata"]["namespace"].as_str().unwrap_or_default();
            if ns != a.namespace || !strings_subjects(b).any(|s| subject_matches(s, ns, a)) {
                continue;
            }
            let role = match b["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => named(&self.cluster_roles, None, role_ref(b)),
                _ => named(&self.roles, Some(ns), role_ref(b)),
            };
            if rules_allow(role) {
                return true;
            }
        }
        false
    }
}

fn role_ref(binding: &Value) -> &str {
    binding["roleRef"]["name"].as_str().unwrap_or_default()
}

fn strings_rules(role: &Value) -> impl Iterator<Item = &Value> {
    role["rules"].as_array().into_iter().flatten()
}

fn strings_subjects(binding: &Value) -> impl Iterator<Item = &Value> {
    binding["subjects"].as_array().into_iter().flatten()
}

/// Whether `labels` match one LabelSelector (matchLabels and matchExpressions).
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let mut values = strings(&e["values"]);
            match e["operator"].as_str() {
                Some("In") => label(key).is_some_and(|v| values.any(|x| x == v)),
                Some("NotIn") => label(key).is_none_or(|v| !values.any(|x| x == v)),
                Some("Exists") => label(key).is_some(),
                Some("DoesNotExist") => label(key).is_none(),
                _ => false,
            }
        });
    by_labels && by_expressions
}

/// Fill every aggregating ClusterRole's rules from the ClusterRoles its `aggregationRule`
/// selects (as the cluster's aggregation controller does), in place.
pub fn aggregate(cluster_roles: &mut [Value]) {
    let snapshot = cluster_roles.to_vec();
    for role in cluster_roles.iter_mut() {
        let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() else {
            continue;
        };
        let me = role["metadata"]["name"].clone();
        let mut rules: Vec<Value> = Vec::new();
        for other in &snapshot {
            if other["metadata"]["name"] == me {
                continue;
            }
            let labels = &other["metadata"]["labels"];
            if selectors.iter().any(|s| selector_matches(s, labels)) {
                for r in strings_rules(other) {
                    if !rules.contains(r) {
                        rules.push(r.clone());
                    }
                }
            }
        }
        role["rules"] = Value::Array(rules);
    }
}

/// [`aggregate`] until nothing changes, so aggregated roles that are themselves aggregated
/// (upstream's `view` into `edit` into `admin`) carry everything; bounded for selector cycles.
pub fn aggregate_all(cluster_roles: &mut [Value]) {
    for _ in 0..8 {
        let before: Vec<Value> = cluster_roles.iter().map(|r| r["rules"].clone()).collect();
        aggregate(cluster_roles);
        if cluster_roles
            .iter()
            .zip(&before)
            .all(|(r, b)| r["rules"] == *b)
        {
            return;
        }
    }
}

/// Upstream's 403 message (`... is forbidden: User "x" cannot list resource ...`).
pub fn forbidden_message(a: &Attributes) -> String {
    if !a.is_resource() {
        return format!(
            "forbidden: User {:?} cannot {} path {:?}",
            a.user, a.verb, a.path
        );
    }
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    let subject = if a.name.is_empty() {
        format!("{qualified} is forbidden")
    } else {
        format!("{qualified} {:?} is forbidden", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", a.namespace)
    };
    format!(
        "{subject}: User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        a.user, a.verb, a.api_group
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(user: &str, verb: &str, group: &str, resource: &str, ns: &str) -> Attributes {
        Attributes {
            user: user.into(),
            groups: vec!["system:authenticated".into()],
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rules_match_like_upstream() {
        let rule = json!({"verbs": ["get", "list"], "apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"]});
        assert!(rule_allows(
            &rule,
            &attrs("u", "list", "kubevirt.io", "virtualmachines", "a")
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("u", "delete", "kubevirt.io", "virtualmachines", "a")
        ));
        assert!(!rule_allows(
            &rule,
            &attrs("u", "get", "", "virtualmachines", "a")
        ));
        let mut sub = attrs(
            "u",
            "update",
            "subresources.kubevirt.io",
            "virtualmachines",
            "a",
        );
        sub.subresource = "start".into();
        assert!(!rule_allows(
            &json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["virtualmachines"]}),
            &sub
        ));
        assert!(rule_allows(
            &json!({"verbs": ["update"], "apiGroups": ["subresources.kubevirt.io"], "resources": ["virtualmachines/start"]}),
            &sub
        ));
        assert!(rule_allows(
            &json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/start"]}),
            &sub
        ));
        let mut named = attrs("u", "get", "", "configmaps", "a");
        let by_name = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["x"]});
        assert!(!rule_allows(&by_name, &named));
        named.name = "x".into();
        assert!(rule_allows(&by_name, &named));
        let path = Attributes {
            user: "u".into(),
            verb: "get".into(),
            path: "/healthz/ping".into(),
            ..Default::default()
        };
        assert!(rule_allows(
            &json!({"verbs": ["get"], "nonResourceURLs": ["/healthz*"]}),
            &path
        ));
        assert!(!rule_allows(
            &json!({"verbs": ["get"], "nonResourceURLs": ["/version"]}),
            &path
        ));
    }

    /// (rule, verb, group, resource, subresource, name, path, allowed)
    type Row = (
        Value,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        bool,
    );

    #[test]
    fn rule_matching_table() {
        let table: &[Row] = &[
            (
                json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                "deletecollection",
                "x.io",
                "things",
                "",
                "",
                "",
                true,
            ),
            (
                json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                "get",
                "",
                "pods",
                "log",
                "p",
                "",
                true,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]}),
                "get",
                "",
                "pods",
                "log",
                "p",
                "",
                false,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}),
                "get",
                "",
                "pods",
                "log",
                "p",
                "",
                true,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}),
                "get",
                "",
                "pods",
                "",
                "p",
                "",
                false,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]}),
                "get",
                "",
                "pods",
                "log",
                "p",
                "",
                true,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]}),
                "get",
                "",
                "pods",
                "",
                "p",
                "",
                false,
            ),
            (
                json!({"verbs": ["update"], "apiGroups": ["apps"], "resources": ["deployments/scale"]}),
                "update",
                "apps",
                "deployments",
                "scale",
                "d",
                "",
                true,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": ["apps"], "resources": ["*"]}),
                "get",
                "",
                "pods",
                "",
                "",
                "",
                false,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a", "b"]}),
                "get",
                "",
                "secrets",
                "",
                "b",
                "",
                true,
            ),
            (
                json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}),
                "get",
                "",
                "secrets",
                "",
                "c",
                "",
                false,
            ),
            (
                json!({"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]}),
                "list",
                "",
                "secrets",
                "",
                "",
                "",
                false,
            ),
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["*"]}),
                "get",
                "",
                "",
                "",
                "",
                "/metrics",
                true,
            ),
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}),
                "get",
                "",
                "",
                "",
                "",
                "/apis/kubevirt.io/v1",
                true,
            ),
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}),
                "get",
                "",
                "",
                "",
                "",
                "/api/v1",
                false,
            ),
            (
                json!({"verbs": ["get"], "nonResourceURLs": ["/apis"]}),
                "post",
                "",
                "",
                "",
                "",
                "/apis",
                false,
            ),
            // A resource rule never grants a path, nor a path rule a resource.
            (
                json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                "get",
                "",
                "",
                "",
                "",
                "/healthz",
                false,
            ),
            (
                json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
                "get",
                "",
                "pods",
                "",
                "",
                "",
                false,
            ),
        ];
        for (rule, verb, group, resource, sub, name, path, want) in table {
            let a = Attributes {
                user: "u".into(),
                verb: verb.to_string(),
                api_group: group.to_string(),
                resource: resource.to_string(),
                subresource: sub.to_string(),
                name: name.to_string(),
                path: path.to_string(),
                namespace: "ns".into(),
                ..Default::default()
            };
            assert_eq!(rule_allows(rule, &a), *want, "{rule} for {a:?}");
        }
    }

    #[test]
    fn bindings_grant_within_their_namespace_and_aggregation_collects_rules() {
        let mut cluster_roles = vec![
            json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}),
            json!({"metadata": {"name": "kubevirt.io:view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                   "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["kubevirt.io"], "resources": ["virtualmachines"]}]}),
        ];
        aggregate(&mut cluster_roles);
        let policy = Policy {
            cluster_roles,
            role_bindings: vec![json!({"metadata": {"name": "b", "namespace": "team-a"},
                "roleRef": {"kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "bot"}]})],
            ..Default::default()
        };
        assert!(policy.allows(&attrs(
            "alice",
            "list",
            "kubevirt.io",
            "virtualmachines",
            "team-a"
        )));
        assert!(!policy.allows(&attrs(
            "alice",
            "list",
            "kubevirt.io",
            "virtualmachines",
            "team-b"
        )));
        assert!(!policy.allows(&attrs(
            "alice",
            "delete",
            "kubevirt.io",
            "virtualmachines",
            "team-a"
        )));
        assert!(policy.allows(&attrs(
            "system:serviceaccount:team-a:bot",
            "get",
            "kubevirt.io",
            "virtualmachines",
            "team-a"
        )));
        assert!(!policy.allows(&attrs(
            "system:serviceaccount:team-b:bot",
            "get",
            "kubevirt.io",
            "virtualmachines",
            "team-a"
        )));
        let mut admin = attrs("root", "delete", "", "nodes", "");
        admin.groups.push(MASTERS.into());
        assert!(policy.allows(&admin));
    }

    #[test]
    fn forbidden_messages_use_upstream_wording() {
        assert_eq!(
            forbidden_message(&attrs("x", "list", "kubevirt.io", "virtualmachines", "y")),
            "virtualmachines.kubevirt.io is forbidden: User \"x\" cannot list resource \"virtualmachines\" in API group \"kubevirt.io\" in the namespace \"y\""
        );
        let mut a = attrs("x", "get", "", "nodes", "");
        a.name = "n1".into();
        assert_eq!(
            forbidden_message(&a),
            "nodes \"n1\" is forbidden: User \"x\" cannot get resource \"nodes\" in API group \"\" at the cluster scope"
        );
    }
}
