//! The components' service accounts and least-privilege roles: what each process calls and no
//! more (docs/DEPLOY.md explains each rule). Every component may read the `KubeVirt` CR, where
//! the cluster's configuration lives (as upstream's components read it).

use serde_json::{Value, json};

use super::Install;

/// virt-api's service account.
pub const API_SA: &str = "kubevirt-apiserver";
/// virt-controller's service account.
pub const CONTROLLER_SA: &str = "kubevirt-controller";
/// virt-handler's service account.
pub const HANDLER_SA: &str = "kubevirt-handler";

const ALL: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const READ: &[&str] = &["get", "list", "watch"];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn read_kubevirt() -> Value {
    rule(&["kubevirt.io"], &["kubevirts"], READ)
}

/// virt-api's cluster rules: authenticating and authorising callers, the VMs and VMIs it acts
/// on, the nodes whose agents it reaches.
pub fn api_rules() -> Vec<Value> {
    vec![
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews"],
            &["create"],
        ),
        rule(
            &["kubevirt.io"],
            &["virtualmachines", "virtualmachineinstances"],
            &["get", "list", "watch", "patch"],
        ),
        rule(&["kubevirt.io"], &["virtualmachines/status"], &["patch"]),
        // `virtualmachines/{name}/migrate` creates a migration.
        rule(
            &["kubevirt.io"],
            &["virtualmachineinstancemigrations"],
            &["create"],
        ),
        rule(&[""], &["nodes"], &["get"]),
        read_kubevirt(),
    ]
}

/// virt-controller's cluster rules (the VM, replica set, VMI, snapshot, restore and
/// DataVolume controllers).
pub fn controller_rules() -> Vec<Value> {
    vec![
        rule(
            &["kubevirt.io"],
            &[
                "virtualmachines",
                "virtualmachineinstances",
                "virtualmachineinstancereplicasets",
                "virtualmachineinstancemigrations",
            ],
            ALL,
        ),
        rule(
            &["kubevirt.io"],
            &[
                "virtualmachines/status",
                "virtualmachineinstancereplicasets/status",
                "virtualmachineinstancemigrations/status",
            ],
            &["update", "patch"],
        ),
        read_kubevirt(),
        rule(&["instancetype.kubevirt.io"], &["*"], READ),
        rule(
            &[""],
            &["pods"],
            &["get", "list", "watch", "create", "delete"],
        ),
        // A VMI's claims (volumeMode: a mount or a device); snapshots read a VM's claims and
        // restores create them; DataVolumes create and patch theirs.
        rule(
            &[""],
            &["persistentvolumeclaims"],
            &["get", "list", "watch", "create", "patch"],
        ),
        rule(&[""], &["events"], &["create", "patch", "update"]),
        rule(
            &["snapshot.kubevirt.io"],
            &[
                "virtualmachinesnapshots",
                "virtualmachinesnapshotcontents",
                "virtualmachinerestores",
            ],
            ALL,
        ),
        rule(
            &["snapshot.kubevirt.io"],
            &[
                "virtualmachinesnapshots/status",
                "virtualmachinesnapshotcontents/status",
                "virtualmachinerestores/status",
            ],
            &["update", "patch"],
        ),
        rule(
            &["snapshot.storage.k8s.io"],
            &["volumesnapshots"],
            &["get", "list", "watch", "create", "delete"],
        ),
        rule(
            &["snapshot.storage.k8s.io"],
            &["volumesnapshotclasses"],
            READ,
        ),
        rule(&["storage.k8s.io"], &["storageclasses"], READ),
        rule(
            &["cdi.kubevirt.io"],
            &["datavolumes", "datavolumes/status"],
            &["get", "list", "watch", "update", "delete"],
        ),
        // A running guest is paused while its volumes are cut (no guest agent to freeze it),
        // and its memory state saved then when the snapshot asks for it (ours).
        rule(
            &["subresources.kubevirt.io"],
            &[
                "virtualmachineinstances/pause",
                "virtualmachineinstances/unpause",
                "virtualmachineinstances/memorysnapshot",
            ],
            &["update"],
        ),
    ]
}

/// virt-handler's cluster rules: the VMIs of its node and their pods, the nodes (a migration's
/// source finds the target node's agent from its Node), and its events (upstream's
/// `kubevirt-handler` ClusterRole has both).
pub fn handler_rules() -> Vec<Value> {
    vec![
        rule(
            &["kubevirt.io"],
            &["virtualmachineinstances"],
            &["get", "list", "watch", "update", "patch"],
        ),
        rule(&[""], &["pods"], &["get", "list"]),
        rule(&[""], &["nodes"], &["get", "list", "watch"]),
        rule(&[""], &["events"], &["create", "patch"]),
        read_kubevirt(),
    ]
}

/// The subresources users may call, aggregated into `admin` and `edit`.
fn subresource_rules() -> Vec<Value> {
    vec![
        rule(
            &["subresources.kubevirt.io"],
            &[
                "virtualmachines/start",
                "virtualmachines/stop",
                "virtualmachines/restart",
                "virtualmachines/migrate",
                "virtualmachineinstances/pause",
                "virtualmachineinstances/unpause",
                "virtualmachineinstances/softreboot",
                "virtualmachineinstances/freeze",
                "virtualmachineinstances/unfreeze",
            ],
            &["update"],
        ),
        rule(
            &["subresources.kubevirt.io"],
            &[
                "virtualmachineinstances/console",
                "virtualmachineinstances/vnc",
            ],
            &["get"],
        ),
    ]
}

fn binding(i: &Install, kind: &str, name: &str, role: &str, sa: &str, component: &str) -> Value {
    let (role_kind, namespaced) = match kind {
        "RoleBinding" => ("Role", true),
        _ => ("ClusterRole", false),
    };
    let mut meta = i.metadata(name, namespaced, component);
    if name == "kubevirt-apiserver-auth-reader" {
        meta["namespace"] = json!("kube-system");
    }
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": i.namespace}]})
}

fn cluster_role(i: &Install, name: &str, component: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": i.metadata(name, false, component), "rules": rules})
}

fn service_account(i: &Install, name: &str, component: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": i.metadata(name, true, component)})
}

/// virt-api's service account, roles and bindings (with the aggregator's delegated
/// authentication and authorisation), and the users' subresource role.
pub fn api_objects(i: &Install) -> Vec<Value> {
    let c = "virt-api";
    let mut users = cluster_role(i, "kubevirt-subresources", c, subresource_rules());
    users["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] = json!("true");
    users["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] = json!("true");
    let mut objects = account_objects(i, API_SA, c, api_rules());
    objects.extend([
        binding(
            i,
            "ClusterRoleBinding",
            "kubevirt-apiserver-auth-delegator",
            "system:auth-delegator",
            API_SA,
            c,
        ),
        binding(
            i,
            "RoleBinding",
            "kubevirt-apiserver-auth-reader",
            "extension-apiserver-authentication-reader",
            API_SA,
            c,
        ),
        users,
    ]);
    objects
}

/// A component's service account, its cluster role of `rules` and their binding, all named
/// `account`.
fn account_objects(i: &Install, account: &str, component: &str, rules: Vec<Value>) -> Vec<Value> {
    vec![
        service_account(i, account, component),
        cluster_role(i, account, component, rules),
        binding(
            i,
            "ClusterRoleBinding",
            account,
            account,
            account,
            component,
        ),
    ]
}

/// virt-controller's service account, role and binding.
pub fn controller_objects(i: &Install) -> Vec<Value> {
    account_objects(i, CONTROLLER_SA, "virt-controller", controller_rules())
}

/// virt-handler's service account, role and binding.
pub fn handler_objects(i: &Install) -> Vec<Value> {
    account_objects(i, HANDLER_SA, "virt-handler", handler_rules())
}

/// Every component's service account and RBAC.
pub fn objects(i: &Install) -> Vec<Value> {
    let mut out = api_objects(i);
    out.extend(controller_objects(i));
    out.extend(handler_objects(i));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rules: &[Value], group: &str, resource: &str, verb: &str) -> bool {
        rules.iter().any(|r| {
            let has = |k: &str, v: &str| r[k].as_array().unwrap().iter().any(|x| x == v);
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    }

    #[test]
    fn the_controller_may_do_what_its_controllers_do_and_no_wildcard_verbs() {
        let rules = controller_rules();
        for (group, resource, verb) in [
            (
                "snapshot.kubevirt.io",
                "virtualmachinesnapshots/status",
                "update",
            ),
            ("snapshot.kubevirt.io", "virtualmachinerestores", "watch"),
            ("snapshot.storage.k8s.io", "volumesnapshots", "create"),
            ("", "persistentvolumeclaims", "create"),
            ("kubevirt.io", "virtualmachines/status", "update"),
            ("kubevirt.io", "kubevirts", "watch"),
            (
                "subresources.kubevirt.io",
                "virtualmachineinstances/pause",
                "update",
            ),
        ] {
            assert!(
                allows(&rules, group, resource, verb),
                "{group} {resource} {verb}"
            );
        }
        for r in rules
            .iter()
            .chain(api_rules().iter())
            .chain(handler_rules().iter())
        {
            assert!(
                r["verbs"].as_array().unwrap().iter().all(|v| v != "*"),
                "{r}"
            );
        }
        assert!(!allows(&handler_rules(), "", "pods", "delete"));
        // A migration's source agent reads the target's Node; every agent records events.
        assert!(allows(&handler_rules(), "", "nodes", "get"));
        assert!(allows(&handler_rules(), "", "events", "create"));
        assert!(!allows(&handler_rules(), "", "nodes", "delete"));
        assert!(!allows(
            &api_rules(),
            "kubevirt.io",
            "virtualmachines",
            "delete"
        ));
    }

    #[test]
    fn the_auth_reader_binding_lives_in_kube_system() {
        let i = crate::operator::components::tests::install();
        let b = api_objects(&i)
            .into_iter()
            .find(|o| o["kind"] == "RoleBinding")
            .unwrap();
        assert_eq!(b["metadata"]["namespace"], "kube-system");
        assert_eq!(b["subjects"][0]["namespace"], "kubevirt");
    }
}
