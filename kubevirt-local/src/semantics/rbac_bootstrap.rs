//! The default RBAC objects, as kube-apiserver's bootstrap policy has them where they matter
//! here: `cluster-admin` (bound to `system:masters`), the user-facing `admin`, `edit` and `view`
//! that aggregate from the `rbac.authorization.k8s.io/aggregate-to-*` labels (with
//! `system:aggregate-to-*` supplying the built-in kinds), `system:discovery`,
//! `system:basic-user` and `system:public-info-viewer` bound to every authenticated user; and
//! KubeVirt's own `kubevirt.io:view|edit|admin`, labelled to aggregate into them, as
//! virt-operator installs them.

use serde_json::{Value, json};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const AGGREGATE: &str = "rbac.authorization.k8s.io/aggregate-to-";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(paths: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": paths, "verbs": verbs})
}

fn cluster_role(name: &str, labels: &[&str], rules: Vec<Value>) -> Value {
    let mut labels_map = serde_json::Map::new();
    labels_map.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    for to in labels {
        labels_map.insert(format!("{AGGREGATE}{to}"), json!("true"));
    }
    json!({"apiVersion": format!("{RBAC_GROUP}/v1"), "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels_map,
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "rules": rules})
}

fn aggregating(name: &str, from: &str, labels: &[&str]) -> Value {
    let mut role = cluster_role(name, labels, Vec::new());
    role["aggregationRule"] =
        json!({"clusterRoleSelectors": [{"matchLabels": {format!("{AGGREGATE}{from}"): "true"}}]});
    role
}

fn binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": RBAC_GROUP, "kind": "Group", "name": g}))
        .collect();
    json!({"apiVersion": format!("{RBAC_GROUP}/v1"), "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": subjects})
}

/// The Kubernetes bootstrap ClusterRoles (see the module documentation).
pub fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregating("admin", "admin", &[]),
        aggregating("edit", "edit", &["admin"]),
        aggregating("view", "view", &["edit"]),
        cluster_role(
            "system:aggregate-to-admin",
            &["admin"],
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                    &["create"],
                ),
                rule(&[RBAC_GROUP], &["roles", "rolebindings"], ALL),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &["edit"],
            vec![
                rule(
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                    READ,
                ),
                rule(&[""], &["serviceaccounts"], &["impersonate"]),
                rule(
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                    WRITE,
                ),
                rule(
                    &[""],
                    &["pods/eviction", "serviceaccounts/token"],
                    &["create"],
                ),
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                    WRITE,
                ),
                rule(
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                    WRITE,
                ),
                rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
                rule(&["batch"], &["cronjobs", "jobs"], WRITE),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                    WRITE,
                ),
                rule(&["policy"], &["poddisruptionbudgets"], WRITE),
                rule(&["discovery.k8s.io"], &["endpointslices"], WRITE),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &["view"],
            vec![
                rule(
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                        "namespaces",
                    ],
                    READ,
                ),
                rule(&["discovery.k8s.io"], &["endpointslices"], READ),
                rule(
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                    READ,
                ),
                rule(
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                    READ,
                ),
                rule(
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                    READ,
                ),
                rule(
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                    READ,
                ),
                rule(
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                    READ,
                ),
                rule(&["events.k8s.io"], &["events"], READ),
            ],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                &["get"],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    &["create"],
                ),
                rule(
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                    &["create"],
                ),
            ],
        ),
        cluster_role(
            "system:auth-delegator",
            &[],
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                    &["create"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                &["get"],
            )],
        ),
    ]
}

/// The Kubernetes bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding("cluster-admin", "cluster-admin", &["system:masters"]),
        binding(
            "system:discovery",
            "system:discovery",
            &["system:authenticated"],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &["system:authenticated"],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
}

const SUB: &str = "subresources.kubevirt.io";
const KUBEVIRT_KINDS: &[&str] = &[
    "virtualmachines",
    "virtualmachineinstances",
    "virtualmachineinstancepresets",
    "virtualmachineinstancereplicasets",
    "virtualmachineinstancemigrations",
];
const VMI_READS: &[&str] = &[
    "virtualmachineinstances/guestosinfo",
    "virtualmachineinstances/filesystemlist",
    "virtualmachineinstances/userlist",
];
const VMI_ACTIONS: &[&str] = &[
    "virtualmachineinstances/pause",
    "virtualmachineinstances/unpause",
    "virtualmachineinstances/addvolume",
    "virtualmachineinstances/removevolume",
    "virtualmachineinstances/freeze",
    "virtualmachineinstances/unfreeze",
    "virtualmachineinstances/softreboot",
];
const VM_ACTIONS: &[&str] = &[
    "virtualmachines/start",
    "virtualmachines/stop",
    "virtualmachines/restart",
    "virtualmachines/migrate",
];

fn kubevirt_role(level: &str, verbs: &[&str], writer: bool) -> Value {
    let mut rules = Vec::new();
    if writer {
        let mut streams = vec![
            "virtualmachineinstances/console",
            "virtualmachineinstances/vnc",
        ];
        streams.extend_from_slice(VMI_READS);
        rules.push(rule(&[SUB], &streams, &["get"]));
        rules.push(rule(&[SUB], VMI_ACTIONS, &["update"]));
        rules.push(rule(&[SUB], VM_ACTIONS, &["update"]));
    } else {
        rules.push(rule(&[SUB], VMI_READS, &["get"]));
    }
    rules.push(rule(&["kubevirt.io"], KUBEVIRT_KINDS, verbs));
    rules.push(rule(
        &["snapshot.kubevirt.io"],
        &[
            "virtualmachinesnapshots",
            "virtualmachinesnapshotcontents",
            "virtualmachinerestores",
        ],
        verbs,
    ));
    rules.push(rule(
        &["instancetype.kubevirt.io"],
        &[
            "virtualmachineinstancetypes",
            "virtualmachineclusterinstancetypes",
            "virtualmachinepreferences",
            "virtualmachineclusterpreferences",
        ],
        verbs,
    ));
    rules.push(rule(
        &["export.kubevirt.io"],
        &["virtualmachineexports"],
        verbs,
    ));
    rules.push(rule(
        &["clone.kubevirt.io"],
        &["virtualmachineclones"],
        verbs,
    ));
    rules.push(rule(&["pool.kubevirt.io"], &["virtualmachinepools"], verbs));
    if writer {
        rules.push(rule(&["kubevirt.io"], &["kubevirts"], &["get", "list"]));
    }
    let mut role = cluster_role(&format!("kubevirt.io:{level}"), &[level], rules);
    role["metadata"]["labels"]["kubevirt.io"] = json!("");
    role
}

/// KubeVirt's user-facing ClusterRoles `kubevirt.io:view|edit|admin` (virt-operator's), each
/// labelled to aggregate into Kubernetes' role of the same level.
pub fn kubevirt_cluster_roles() -> Vec<Value> {
    let edit: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|v| *v != "deletecollection")
        .collect();
    vec![
        kubevirt_role("view", READ, false),
        kubevirt_role("edit", &edit, true),
        kubevirt_role("admin", ALL, true),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semantics::rbac::{Attributes, aggregate_all, rule_allows};

    fn allows(
        roles: &[Value],
        name: &str,
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
    ) -> bool {
        let role = roles
            .iter()
            .find(|r| r["metadata"]["name"] == name)
            .expect("role");
        let a = Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "ns".into(),
            ..Default::default()
        };
        role["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| rule_allows(r, &a))
    }

    #[test]
    fn kubevirt_roles_aggregate_into_view_edit_and_admin_at_their_level() {
        let mut roles = cluster_roles();
        roles.extend(kubevirt_cluster_roles());
        aggregate_all(&mut roles);
        let vm = |role: &str, verb: &str| {
            allows(&roles, role, verb, "kubevirt.io", "virtualmachines", "")
        };
        assert!(vm("view", "list") && !vm("view", "create"));
        assert!(vm("edit", "create") && !vm("edit", "deletecollection"));
        assert!(vm("admin", "deletecollection"));
        let sub = |role: &str, verb: &str, r: &str, s: &str| allows(&roles, role, verb, SUB, r, s);
        assert!(!sub("view", "get", "virtualmachineinstances", "console"));
        assert!(sub("edit", "get", "virtualmachineinstances", "console"));
        assert!(sub("edit", "update", "virtualmachines", "start"));
        assert!(!sub("edit", "get", "virtualmachines", "start"));
        assert!(sub("admin", "update", "virtualmachineinstances", "pause"));
        // view flows into edit and edit into admin, as upstream's labels chain them.
        assert!(allows(&roles, "admin", "get", "", "pods", "log"));
        assert!(allows(
            &roles,
            "admin",
            "create",
            RBAC_GROUP,
            "rolebindings",
            ""
        ));
        assert!(!allows(
            &roles,
            "edit",
            "create",
            RBAC_GROUP,
            "rolebindings",
            ""
        ));
    }
}
