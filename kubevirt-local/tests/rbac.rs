//! RBAC with the real kubectl against a real `kubevirt-local apiserver`: identities from
//! `kubevirt-local kubeconfig --user`, service-account tokens and the administrator's
//! kubeconfig; `kubectl auth can-i` and `auth whoami`; 403s with upstream's wording for another
//! namespace's VMs, consoles and start; aggregation of a new ClusterRole into `view`; 401 for
//! unknown and expired credentials; user credentials surviving a restart.

mod common;

use common::users::{as_user, can_i, stderr, stdout, user_kubeconfig};
use common::{Server, crds_file, fixture};
use kubevirt_local::semantics::rbac_bootstrap::kubevirt_cluster_roles;
use kubevirt_testsupport::eventually;
use std::path::{Path, PathBuf};

fn roles_file(dir: &Path) -> PathBuf {
    let docs: Vec<String> = kubevirt_cluster_roles()
        .iter()
        .map(|r| format!("---\n{r}\n"))
        .collect();
    let path = dir.join("kubevirt-roles.yaml");
    std::fs::write(&path, docs.concat()).expect("write roles");
    path
}

/// A SelfSubjectAccessReview through `kubectl create` (JSON) as `kubeconfig`: whether the
/// server allows `verb` on `group`'s `resource/subresource` in `ns`. (`kubectl auth can-i`
/// cannot name the subresource API's resources: they are not in discovery as kinds.)
fn review(kubeconfig: &Path, verb: &str, group: &str, resource: &str, sub: &str, ns: &str) -> bool {
    let ssar = serde_json::json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource, "subresource": sub, "namespace": ns}}});
    let args = [
        "--request-timeout=20s",
        "create",
        "--validate=false",
        "-f",
        "-",
        "-o",
        "jsonpath={.status.allowed}",
    ];
    let out = kubevirt_testsupport::kubectl(kubeconfig, &args, Some(&ssar.to_string()));
    match stdout(&out).as_str() {
        "true" => true,
        "false" => false,
        other => panic!("review {ssar}: {other:?} {}", stderr(&out)),
    }
}

/// A server with the KubeVirt CRDs and roles, namespaces team-a and team-b with one VM each.
fn cluster(tag: &str) -> Server {
    let s = Server::start(tag);
    s.ok(&["apply", "-f", crds_file(&s.dir).to_str().unwrap()]);
    s.ok(&["apply", "-f", roles_file(&s.dir).to_str().unwrap()]);
    for ns in ["team-a", "team-b"] {
        s.ok(&["create", "namespace", ns]);
        s.ok(&[
            "-n",
            ns,
            "apply",
            "-f",
            &fixture("kubevirt-examples-vm-cirros.yaml"),
        ]);
    }
    s
}

#[test]
fn can_i_answers_per_role_for_admin_users_and_service_accounts() {
    let s = cluster("rbac-can-i");
    let admin = s.kubeconfig.clone();
    assert!(can_i(&admin, &["delete", "nodes"]));
    assert!(can_i(&admin, &["*", "*", "--all-namespaces"]));
    let who = stdout(&as_user(
        &admin,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"],
    ));
    assert!(who.contains("system:masters"), "{who}");

    // alice may view team-a, through the view role (which kubevirt.io:view aggregates into).
    s.ok(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        "alice-view",
        "--clusterrole=view",
        "--user=alice",
    ]);
    let alice = user_kubeconfig(&s.dir, "alice", &[], &[]);
    let who = stdout(&as_user(
        &alice,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    ));
    assert_eq!(who, r#"alice ["system:authenticated"]"#);
    assert!(can_i(&alice, &["list", "virtualmachines", "-n", "team-a"]));
    assert!(can_i(&alice, &["get", "vm/vm-cirros", "-n", "team-a"]));
    assert!(can_i(&alice, &["watch", "vmis", "-n", "team-a"]));
    assert!(!can_i(&alice, &["list", "virtualmachines", "-n", "team-b"]));
    assert!(!can_i(
        &alice,
        &["create", "virtualmachines", "-n", "team-a"]
    ));
    assert!(!can_i(&alice, &["delete", "pods", "-n", "team-a"]));
    assert!(can_i(
        &alice,
        &["get", "pods", "--subresource=log", "-n", "team-a"]
    ));
    assert!(!review(
        &alice,
        "get",
        "subresources.kubevirt.io",
        "virtualmachineinstances",
        "console",
        "team-a"
    ));
    assert!(!can_i(&alice, &["list", "nodes"]));
    let list = stdout(&as_user(
        &alice,
        &["auth", "can-i", "--list", "-n", "team-a"],
    ));
    assert!(
        list.lines().any(
            |l| l.starts_with("virtualmachines.kubevirt.io ") && l.contains("[get list watch]")
        ),
        "{list}"
    );
    assert!(list.lines().any(|l| l.contains("[/api/*]")), "{list}");
    let elsewhere = stdout(&as_user(
        &alice,
        &["auth", "can-i", "--list", "-n", "team-b"],
    ));
    assert!(!elsewhere.contains("virtualmachines"), "{elsewhere}");

    // A group bound to edit: the console and start, in its namespace only.
    s.ok(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        "devs-edit",
        "--clusterrole=edit",
        "--group=devs",
    ]);
    let bob = user_kubeconfig(&s.dir, "bob", &["devs"], &[]);
    assert!(can_i(&bob, &["create", "virtualmachines", "-n", "team-a"]));
    assert!(review(
        &bob,
        "get",
        "subresources.kubevirt.io",
        "virtualmachineinstances",
        "console",
        "team-a"
    ));
    assert!(review(
        &bob,
        "update",
        "subresources.kubevirt.io",
        "virtualmachines",
        "start",
        "team-a"
    ));
    assert!(!review(
        &bob,
        "update",
        "subresources.kubevirt.io",
        "virtualmachines",
        "start",
        "team-b"
    ));
    assert!(!can_i(
        &bob,
        &["deletecollection", "virtualmachines", "-n", "team-a"]
    ));
    assert!(!can_i(&bob, &["create", "rolebindings", "-n", "team-a"]));

    // TokenReview: who a token speaks for, for callers allowed to ask (the admin here).
    let alice_token = String::from_utf8_lossy(
        &kubevirt_testsupport::kubectl(
            &alice,
            &[
                "config",
                "view",
                "--raw",
                "-o",
                "jsonpath={.users[0].user.token}",
            ],
            None,
        )
        .stdout,
    )
    .into_owned();
    let review = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": alice_token}});
    let out = kubevirt_testsupport::kubectl(
        &admin,
        &[
            "create",
            "--validate=false",
            "-f",
            "-",
            "-o",
            "jsonpath={.status.authenticated} {.status.user.username}",
        ],
        Some(&review.to_string()),
    );
    assert_eq!(stdout(&out), "true alice", "{}", stderr(&out));
    let out = kubevirt_testsupport::kubectl(
        &alice,
        &["create", "--validate=false", "-f", "-", "-o", "name"],
        Some(&review.to_string()),
    );
    assert!(
        stderr(&out).contains("cannot create resource \"tokenreviews\""),
        "{}",
        stderr(&out)
    );

    // Impersonation: the admin may act as alice (kubectl --as), alice may not act as bob.
    assert!(can_i(
        &admin,
        &["--as=alice", "list", "virtualmachines", "-n", "team-a"]
    ));
    assert!(!can_i(
        &admin,
        &["--as=alice", "list", "virtualmachines", "-n", "team-b"]
    ));
    assert!(can_i(
        &admin,
        &[
            "--as=nobody",
            "--as-group=devs",
            "create",
            "virtualmachines",
            "-n",
            "team-a"
        ]
    ));
    let out = as_user(&alice, &["--as=bob", "get", "vm", "-n", "team-a"]);
    assert!(
        stderr(&out).contains(r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{}",
        stderr(&out)
    );

    // A service account bound to admin in team-b.
    s.ok(&["-n", "team-b", "create", "serviceaccount", "bot"]);
    s.ok(&[
        "-n",
        "team-b",
        "create",
        "rolebinding",
        "bot-admin",
        "--clusterrole=admin",
        "--serviceaccount=team-b:bot",
    ]);
    let token = s.ok(&["-n", "team-b", "create", "token", "bot"]);
    let sa = |args: &[&str]| {
        let mut all = vec!["--token", token.trim(), "auth", "can-i"];
        all.extend_from_slice(args);
        stdout(&as_user(&s.kubeconfig, &all)) == "yes"
    };
    assert!(sa(&["deletecollection", "virtualmachines", "-n", "team-b"]));
    assert!(sa(&["create", "rolebindings", "-n", "team-b"]));
    assert!(!sa(&["get", "virtualmachines", "-n", "team-a"]));
    let who = stdout(&as_user(
        &s.kubeconfig,
        &[
            "--token",
            token.trim(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
    ));
    // An admin of team-b may bind what it holds there, not more (the escalation check).
    let bind = |role: &str| {
        as_user(
            &s.kubeconfig,
            &[
                "--token",
                token.trim(),
                "-n",
                "team-b",
                "create",
                "rolebinding",
                &format!("bot-{role}"),
                &format!("--clusterrole={role}"),
                "--user=frank",
            ],
        )
    };
    let out = bind("view");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bind("cluster-admin");
    assert!(
        stderr(&out).contains(r#"is attempting to grant RBAC permissions not currently held"#),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        who,
        r#"system:serviceaccount:team-b:bot ["system:serviceaccounts","system:serviceaccounts:team-b","system:authenticated"]"#
    );
}

#[test]
fn a_restricted_user_is_refused_other_namespaces_with_upstream_messages() {
    let s = cluster("rbac-403");
    s.ok(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        "carol-edit",
        "--clusterrole=edit",
        "--user=carol",
    ]);
    let carol = user_kubeconfig(&s.dir, "carol", &[], &[]);

    let own = as_user(&carol, &["-n", "team-a", "get", "vm", "-o", "name"]);
    assert_eq!(
        stdout(&own),
        "virtualmachine.kubevirt.io/vm-cirros",
        "{}",
        stderr(&own)
    );
    let out = as_user(&carol, &["-n", "team-b", "get", "vm"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"Error from server (Forbidden): virtualmachines.kubevirt.io is forbidden: User "carol" cannot list resource "virtualmachines" in API group "kubevirt.io" in the namespace "team-b""#),
        "{}",
        stderr(&out)
    );
    let out = as_user(&carol, &["-n", "team-b", "get", "vm", "vm-cirros"]);
    assert!(
        stderr(&out).contains(r#"virtualmachines.kubevirt.io "vm-cirros" is forbidden: User "carol" cannot get resource "virtualmachines" in API group "kubevirt.io" in the namespace "team-b""#),
        "{}",
        stderr(&out)
    );
    let out = as_user(
        &carol,
        &["-n", "team-b", "get", "vm", "-w", "--request-timeout=3s"],
    );
    assert!(stderr(&out).contains("Forbidden"), "{}", stderr(&out));
    let out = as_user(&carol, &["-n", "team-b", "delete", "vm", "--all"]);
    assert!(stderr(&out).contains("Forbidden"), "{}", stderr(&out));
    let out = as_user(
        &carol,
        &[
            "-n",
            "team-b",
            "patch",
            "vm",
            "vm-cirros",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        ],
    );
    // kubectl reads the object before patching it: refused at the read.
    assert!(stderr(&out).contains("is forbidden"), "{}", stderr(&out));
    assert!(!review(
        &carol,
        "patch",
        "kubevirt.io",
        "virtualmachines",
        "",
        "team-b"
    ));
    let own = as_user(
        &carol,
        &[
            "-n",
            "team-a",
            "patch",
            "vm",
            "vm-cirros",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
        ],
    );
    assert!(own.status.success(), "{}", stderr(&own));

    // The subresource API: another namespace's console and start are refused before they
    // reach it; in her own namespace the request passes authorisation (this server runs no
    // subresource API, so it then finds nothing there).
    let console = |ns: &str| {
        as_user(
            &carol,
            &[
                "get",
                "--raw",
                &format!(
                    "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/vm-cirros/console"
                ),
            ],
        )
    };
    let out = console("team-b");
    assert!(
        stderr(&out).contains(r#"virtualmachineinstances.subresources.kubevirt.io "vm-cirros" is forbidden: User "carol" cannot get resource "virtualmachineinstances/console" in API group "subresources.kubevirt.io" in the namespace "team-b""#),
        "{}",
        stderr(&out)
    );
    let out = console("team-a");
    assert!(
        !stderr(&out).contains("Forbidden") && stderr(&out).contains("NotFound"),
        "{}",
        stderr(&out)
    );
    let body = s.dir.join("start.json");
    std::fs::write(&body, "{}").expect("body");
    let start = |ns: &str| {
        as_user(
            &carol,
            &[
                "replace",
                "--raw",
                &format!(
                    "/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachines/vm-cirros/start"
                ),
                "-f",
                body.to_str().unwrap(),
            ],
        )
    };
    let out = start("team-b");
    assert!(
        stderr(&out).contains(r#"User "carol" cannot update resource "virtualmachines/start" in API group "subresources.kubevirt.io" in the namespace "team-b""#),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&start("team-a")).contains("Forbidden"));

    // Cluster-scoped and RBAC objects are out of reach too.
    let out = as_user(&carol, &["get", "nodes"]);
    assert!(
        stderr(&out).contains(
            r#"User "carol" cannot list resource "nodes" in API group "" at the cluster scope"#
        ),
        "{}",
        stderr(&out)
    );
    let out = as_user(
        &carol,
        &[
            "-n",
            "team-a",
            "create",
            "rolebinding",
            "me-admin",
            "--clusterrole=admin",
            "--user=carol",
        ],
    );
    assert!(stderr(&out).contains("is forbidden"), "{}", stderr(&out));
}

#[test]
fn a_new_cluster_role_labelled_aggregate_to_view_extends_view() {
    let s = Server::start("rbac-aggregation");
    s.ok(&["create", "namespace", "team-a"]);
    let crd = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}"#;
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some(crd));
    assert!(out.status.success(), "{}", stderr(&out));
    s.ok(&[
        "-n",
        "team-a",
        "create",
        "rolebinding",
        "dave-view",
        "--clusterrole=view",
        "--user=dave",
    ]);
    let dave = user_kubeconfig(&s.dir, "dave", &[], &[]);
    assert!(!can_i(
        &dave,
        &["list", "widgets.example.com", "-n", "team-a"]
    ));
    let role = r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "widget-viewer", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list"]}]}"#;
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some(role));
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("view to include widgets", || {
        can_i(&dave, &["list", "widgets.example.com", "-n", "team-a"]).then_some(())
    });
    let view = s.ok(&["get", "clusterrole", "view", "-o", "json"]);
    assert!(
        view.contains("widgets"),
        "the aggregated rules are stored: {view}"
    );
    // And taken away again.
    s.ok(&["delete", "clusterrole", "widget-viewer"]);
    eventually("view to drop widgets", || {
        (!can_i(&dave, &["list", "widgets.example.com", "-n", "team-a"])).then_some(())
    });
}

#[test]
fn unknown_and_expired_credentials_get_401_and_user_credentials_survive_a_restart() {
    let s = Server::start("rbac-401");
    let out = s.kubectl(&["get", "ns", "--token=not.a.token"]);
    assert!(
        stderr(&out).contains("Unauthorized") || stderr(&out).contains("must be logged in"),
        "{}",
        stderr(&out)
    );
    s.ok(&[
        "create",
        "clusterrolebinding",
        "erin-view",
        "--clusterrole=view",
        "--user=erin",
    ]);
    let short = user_kubeconfig(&s.dir, "erin", &[], &["--expiration-seconds", "2"]);
    assert_eq!(
        stdout(&as_user(&short, &["get", "ns", "default", "-o", "name"])),
        "namespace/default"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let out = as_user(&short, &["get", "ns", "default"]);
    assert!(
        stderr(&out).contains("Unauthorized") || stderr(&out).contains("must be logged in"),
        "{}",
        stderr(&out)
    );

    let erin = user_kubeconfig(&s.dir, "erin", &["auditors"], &[]);
    assert!(can_i(&erin, &["list", "namespaces"]));
    let dir = s.kill();
    let s = Server::start_in(dir, &[]);
    let out = as_user(
        &erin,
        &["--server", &s.url, "get", "ns", "default", "-o", "name"],
    );
    assert_eq!(stdout(&out), "namespace/default", "{}", stderr(&out));
    let out = as_user(&erin, &["--server", &s.url, "create", "ns", "nope"]);
    assert!(stderr(&out).contains("Forbidden"), "{}", stderr(&out));
}
