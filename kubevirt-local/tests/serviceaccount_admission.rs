//! Upstream's ServiceAccount admission, through the real kubectl against `kubevirt-local
//! apiserver` (no controllers: the `default` account comes with its namespace): a pod naming an
//! account that does not exist is forbidden in upstream's words, a mirror pod is not, and a pod
//! created right after its namespace always finds `default`.

mod common;

use std::time::{Duration, Instant};

use common::Server;

fn pod(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{extra}spec:\n  containers: [{{name: a, image: busybox}}]\n"
    )
}

#[test]
fn pods_need_an_existing_service_account() {
    let s = Server::start("sa-admission");
    // A new namespace and at once a pod in it: `default` is already there.
    for i in 0..5 {
        let ns = format!("team{i}");
        s.ok(&["create", "namespace", &ns]);
        let out = s.kubectl_stdin(&["-n", &ns, "create", "-f", "-"], Some(&pod("p", "")));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s.ok(&["-n", "team0", "get", "sa", "default"]);
    let p: serde_json::Value =
        serde_json::from_str(&s.ok(&["-n", "team0", "get", "pod", "p", "-o", "json"])).unwrap();
    assert_eq!(p["spec"]["serviceAccountName"], "default");

    // An account nobody made: forbidden, nothing stored.
    let named = pod("p2", "").replace("spec:\n", "spec:\n  serviceAccountName: ops\n");
    let err = s.fails(&["-n", "team0", "create", "-f", "-"], Some(&named));
    assert!(
        err.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"p2\" is forbidden: \
             error looking up service account team0/ops: serviceaccount \"ops\" not found"
        ),
        "{err}"
    );
    s.fails(&["-n", "team0", "get", "pod", "p2"], None);
    // Server-side apply creates through the same admission.
    let err = s.fails(
        &["-n", "team0", "apply", "--server-side", "-f", "-"],
        Some(&named),
    );
    assert!(err.contains("serviceaccount \"ops\" not found"), "{err}");
    // Once it exists the same pod is admitted.
    s.ok(&["-n", "team0", "create", "serviceaccount", "ops"]);
    let out = s.kubectl_stdin(&["-n", "team0", "create", "-f", "-"], Some(&named));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A mirror pod is exempt.
    let mirror = pod("m", "  annotations: {kubernetes.io/config.mirror: abc}\n")
        .replace("spec:\n", "spec:\n  serviceAccountName: nobody\n");
    let out = s.kubectl_stdin(&["-n", "team0", "create", "-f", "-"], Some(&mirror));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // `default` deleted: after upstream's brief retry, the pod is refused in the same words.
    s.ok(&["-n", "team1", "delete", "sa", "default"]);
    let started = Instant::now();
    let err = s.fails(&["-n", "team1", "create", "-f", "-"], Some(&pod("q", "")));
    assert!(
        err.contains(
            "pods \"q\" is forbidden: error looking up service account team1/default: \
             serviceaccount \"default\" not found"
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
