//! Service accounts with the real kubectl against `up --no-node --no-kubelet`: each namespace gets the
//! `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap, `default` gets the
//! `kubernetes` Service, and `kubectl create token` issues tokens the server accepts (and only
//! those: not expired, for its audience, of a service account that still exists).

mod common;

use common::plane::Plane;
use kubevirt_testsupport::eventually;

#[test]
fn namespaces_get_service_accounts_and_the_root_ca() {
    let p = Plane::start("serviceaccounts");
    p.ok(&["create", "namespace", "team"]);
    eventually("the default service account", || {
        p.kubectl(&["-n", "team", "get", "sa", "default"], None)
            .status
            .success()
            .then_some(())
    });
    let ca = eventually("the root CA config map", || {
        let out = p.kubectl(
            &[
                "-n",
                "team",
                "get",
                "cm",
                "kube-root-ca.crt",
                "-o",
                "jsonpath={.data.ca\\.crt}",
            ],
            None,
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let kubeconfig_ca = p.ok(&[
        "config",
        "view",
        "--raw",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    use base64::Engine;
    let kubeconfig_ca = base64::engine::general_purpose::STANDARD
        .decode(kubeconfig_ca.trim())
        .expect("base64");
    assert_eq!(
        ca.trim(),
        String::from_utf8_lossy(&kubeconfig_ca).trim(),
        "the server's CA"
    );
    let server = p.ok(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let port = server.rsplit(':').next().expect("port").to_string();
    eventually("the kubernetes service", || {
        let out = p.kubectl(
            &[
                "get",
                "endpoints",
                "kubernetes",
                "-o",
                "jsonpath={.subsets[0].ports[0].port}",
            ],
            None,
        );
        (String::from_utf8_lossy(&out.stdout) == port).then_some(())
    });
    assert_eq!(
        p.get(&["svc", "kubernetes"], "{.spec.ports[0].port}"),
        "443"
    );
}

#[test]
fn create_token_issues_tokens_the_server_accepts() {
    let p = Plane::start("tokens");
    p.ok(&["create", "namespace", "team"]);
    p.ok(&["-n", "team", "create", "serviceaccount", "builder"]);
    // What the token may do is what RBAC grants its service account.
    p.ok(&[
        "-n",
        "team",
        "create",
        "rolebinding",
        "builder-view",
        "--clusterrole=view",
        "--serviceaccount=team:builder",
    ]);
    let token = p.ok(&["-n", "team", "create", "token", "builder", "--duration=15m"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let with = |t: &str| {
        p.kubectl(
            &[
                "--token", t, "-n", "team", "get", "sa", "builder", "-o", "name",
            ],
            None,
        )
    };
    let out = with(token);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "serviceaccount/builder"
    );

    // Altered, for another audience, too short, or of a deleted service account: refused.
    let mut forged = token.to_string();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let err = String::from_utf8_lossy(&with(&forged).stderr).into_owned();
    assert!(
        err.contains("Unauthorized") || err.contains("must be logged in"),
        "{err}"
    );
    let vault = p.ok(&[
        "-n",
        "team",
        "create",
        "token",
        "builder",
        "--audience=vault",
    ]);
    assert!(
        !with(vault.trim()).status.success(),
        "a token for another audience"
    );
    let out = p.kubectl(
        &["-n", "team", "create", "token", "builder", "--duration=5m"],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("spec.expirationSeconds")
            && err.contains("10 minutes"),
        "{err}"
    );
    let out = p.kubectl(&["-n", "team", "create", "token", "nobody"], None);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not found"));
    p.ok(&["-n", "team", "delete", "sa", "builder"]);
    assert!(!with(token).status.success(), "the service account is gone");
}
