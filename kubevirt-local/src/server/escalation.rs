//! RBAC's escalation check, as kube-apiserver's role and binding storage does it: a user may
//! write a Role or ClusterRole only with rules it already holds (where the role applies) unless
//! RBAC grants it `escalate` on that role, and may bind a role only if it holds all of the
//! role's rules unless RBAC grants it `bind` on it. Without this, anyone allowed to write
//! RoleBindings in a namespace (`admin`) could bind `cluster-admin` to itself there.

use super::State;
use super::authn::UserInfo;
use super::authz::Index;
use crate::error::ApiError;
use crate::registry::Resource;
use crate::semantics::rbac::{Attributes, MASTERS};
use serde_json::Value;

const RBAC: &str = "rbac.authorization.k8s.io";

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Every single-verb, single-resource, single-name request a rule allows, as attributes in
/// `namespace`: what the writer must hold for the rule to be covered. Wildcards stay literal,
/// so only a wildcard covers a wildcard (upstream's rule coverage).
pub fn atoms(rule: &Value, namespace: &str) -> Vec<Attributes> {
    let mut out = Vec::new();
    let verbs = strings(&rule["verbs"]);
    for path in strings(&rule["nonResourceURLs"]) {
        for verb in &verbs {
            out.push(Attributes {
                verb: verb.clone(),
                path: path.clone(),
                ..Default::default()
            });
        }
    }
    let mut names = strings(&rule["resourceNames"]);
    if names.is_empty() {
        names.push(String::new());
    }
    for group in strings(&rule["apiGroups"]) {
        for resource in strings(&rule["resources"]) {
            let (resource, subresource) = match resource.split_once('/') {
                Some((r, s)) => (r.to_string(), s.to_string()),
                None => (resource, String::new()),
            };
            for name in &names {
                for verb in &verbs {
                    out.push(Attributes {
                        verb: verb.clone(),
                        api_group: group.clone(),
                        resource: resource.clone(),
                        subresource: subresource.clone(),
                        namespace: namespace.to_string(),
                        name: name.clone(),
                        ..Default::default()
                    });
                }
            }
        }
    }
    out
}

/// The rules of `rules` that `user` does not hold in `namespace`, as upstream lists them.
fn not_held(index: &Index, user: &UserInfo, rules: &[Value], namespace: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for rule in rules {
        for mut a in atoms(rule, namespace) {
            a.user.clone_from(&user.name);
            a.groups.clone_from(&user.groups);
            if index.allows(&a).is_none() {
                missing.push(if a.path.is_empty() {
                    let resource = if a.subresource.is_empty() {
                        a.resource.clone()
                    } else {
                        format!("{}/{}", a.resource, a.subresource)
                    };
                    let names = if a.name.is_empty() {
                        String::new()
                    } else {
                        format!(", ResourceNames:[{:?}]", a.name)
                    };
                    format!(
                        "{{APIGroups:[{:?}], Resources:[{resource:?}]{names}, Verbs:[{:?}]}}",
                        a.api_group, a.verb
                    )
                } else {
                    format!("{{NonResourceURLs:[{:?}], Verbs:[{:?}]}}", a.path, a.verb)
                });
            }
        }
    }
    missing
}

/// Refuse writing `obj` (a Role, ClusterRole or one of their bindings) if it would give away
/// permissions `user` does not hold; other kinds pass.
pub fn check(state: &State, user: &UserInfo, res: &Resource, obj: &Value) -> Result<(), ApiError> {
    if res.group != RBAC || user.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let index = state.authorizer.index(state)?;
    let namespace = obj["metadata"]["namespace"].as_str().unwrap_or_default();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let may = |verb: &str, resource: &str, target: &str| {
        index
            .allows(&Attributes {
                user: user.name.clone(),
                groups: user.groups.clone(),
                verb: verb.into(),
                api_group: RBAC.into(),
                resource: resource.into(),
                namespace: namespace.into(),
                name: target.into(),
                ..Default::default()
            })
            .is_some()
    };
    let qualified = format!("{}.{RBAC} {name:?}", res.plural);
    let refuse = |why: String| {
        ApiError::forbidden(format!(
            "{qualified} is forbidden: user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{why}",
            user.name, user.groups
        ))
    };
    let missing = match res.plural.as_str() {
        "roles" | "clusterroles" => {
            if may("escalate", &res.plural, name) {
                return Ok(());
            }
            if obj.get("aggregationRule").is_some_and(|r| !r.is_null()) {
                return Err(refuse(
                    "an aggregated ClusterRole may hold any rule: it needs `escalate`".into(),
                ));
            }
            let rules = obj["rules"].as_array().cloned().unwrap_or_default();
            not_held(&index, user, &rules, namespace)
        }
        "rolebindings" | "clusterrolebindings" => {
            let role = obj["roleRef"]["name"].as_str().unwrap_or_default();
            let namespaced_role = obj["roleRef"]["kind"] == "Role";
            let role_plural = if namespaced_role {
                "roles"
            } else {
                "clusterroles"
            };
            if may("bind", role_plural, role) {
                return Ok(());
            }
            let rules = index.rules_of(namespaced_role.then_some(namespace), role);
            not_held(&index, user, &rules, namespace)
        }
        _ => Vec::new(),
    };
    if missing.is_empty() {
        Ok(())
    } else {
        Err(refuse(missing.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_break_into_single_requests_with_literal_wildcards() {
        let a = atoms(
            &json!({"verbs": ["get", "list"], "apiGroups": ["", "apps"], "resources": ["pods/log", "*"], "resourceNames": ["x"]}),
            "ns",
        );
        assert_eq!(a.len(), 8);
        assert!(a.iter().any(|a| a.resource == "pods"
            && a.subresource == "log"
            && a.name == "x"
            && a.verb == "list"));
        assert!(a.iter().any(|a| a.resource == "*" && a.api_group == "apps"));
        let urls = atoms(
            &json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*"]}),
            "",
        );
        assert_eq!(
            urls.iter().map(|a| a.path.as_str()).collect::<Vec<_>>(),
            ["/healthz", "/api/*"]
        );
    }
}
