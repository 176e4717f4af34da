//! `Impersonate-Extra-<key>` with the real kubectl (a kubeconfig's `as` and `as-user-extra`)
//! against a real `kubevirt-local apiserver`: allowed by `impersonate` on
//! `userextras/<key>` (authentication.k8s.io) with the value as resource name, carried into the
//! impersonated user's extra (`kubectl auth whoami`), and refused with a 403 naming
//! `userextras/<key>` without that grant.

mod common;

use common::Server;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A token kubeconfig for `user` that impersonates `as_user` with `extra`, as JSON.
fn impersonating(s: &Server, user: &str, as_user: &str, extra: serde_json::Value) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_kubevirt-local"))
        .arg("kubeconfig")
        .arg("--data-dir")
        .arg(&s.dir)
        .args(["--user", user])
        .output()
        .expect("run kubevirt-local kubeconfig");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let kc: kube::config::Kubeconfig = serde_saphyr::from_str(&text).expect("kubeconfig");
    let mut v = serde_json::to_value(&kc).expect("json");
    v["users"][0]["user"]["as"] = json!(as_user);
    v["users"][0]["user"]["as-user-extra"] = extra;
    let dir = s.dir.join(format!("as-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, v.to_string()).expect("write");
    path
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    let args: Vec<&str> = ["--request-timeout=20s"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    kubevirt_testsupport::kubectl(kubeconfig, &args, None)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn impersonated_extras_need_the_userextras_grant_and_show_in_whoami() {
    let s = Server::start("impersonate-extra");
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "impersonate-dave-viewer"},
        "rules": [
            {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["dave"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["userextras/scopes"],
             "verbs": ["impersonate"], "resourceNames": ["view", "audit"]}]});
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some(&role.to_string()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    s.ok(&[
        "create",
        "clusterrolebinding",
        "ivy-impersonates",
        "--clusterrole=impersonate-dave-viewer",
        "--user=ivy",
    ]);

    // Granted values: the impersonated identity carries them (both, in order).
    let ok = impersonating(&s, "ivy", "dave", json!({"scopes": ["view", "audit"]}));
    let out = kubectl(&ok, &["auth", "whoami", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let review: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let info = &review["status"]["userInfo"];
    assert_eq!(info["username"], "dave", "{review}");
    assert_eq!(info["groups"], json!(["system:authenticated"]), "{review}");
    assert_eq!(
        info["extra"],
        json!({"scopes": ["view", "audit"]}),
        "{review}"
    );
    let table = text(&kubectl(&ok, &["auth", "whoami"]).stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("Extra: scopes") && l.contains("[view audit]")),
        "{table}"
    );

    // A value the role does not name: 403 naming userextras/scopes, as kube-apiserver words it.
    let refused = impersonating(&s, "ivy", "dave", json!({"scopes": ["edit"]}));
    // (`auth whoami` hides a 403's message; a raw GET prints it.)
    let out = kubectl(&refused, &["get", "--raw", "/version"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains(r#"userextras.authentication.k8s.io "edit" is forbidden: User "ivy" cannot impersonate resource "userextras/scopes" in API group "authentication.k8s.io" at the cluster scope"#),
        "{err}"
    );
    // A key the role does not name.
    let other_key = impersonating(&s, "ivy", "dave", json!({"reason": ["view"]}));
    let err = text(&kubectl(&other_key, &["get", "--raw", "/version"]).stderr);
    assert!(
        err.contains(r#"cannot impersonate resource "userextras/reason""#),
        "{err}"
    );

    // The granted kubeconfig fails too once the binding is gone.
    s.ok(&["delete", "clusterrolebinding", "ivy-impersonates"]);
    let err = text(&kubectl(&ok, &["get", "--raw", "/version"]).stderr);
    assert!(err.contains("is forbidden"), "{err}");
}
