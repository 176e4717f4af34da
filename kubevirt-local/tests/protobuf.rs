//! kubectl's typed generators send protobuf; the stored object must be the one the same command's
//! JSON form (`-o json --dry-run=client | kubectl create -f -`) gives.

mod common;

use common::Server;
use serde_json::Value;

/// The object without what the server assigns per object (uid, times, versions, namespace).
fn stored(s: &Server, ns: &str, kind: &str, name: &str) -> Value {
    let out = s.ok(&["-n", ns, "get", kind, name, "-o", "json"]);
    let mut v: Value = serde_json::from_str(&out).expect("json");
    let meta = v["metadata"].as_object_mut().expect("metadata");
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "namespace",
        "managedFields",
    ] {
        meta.remove(k);
    }
    v
}

/// Run `create` both ways (protobuf in `pb`, JSON in `js`) and compare the stored objects.
fn same_both_ways(s: &Server, kind: &str, name: &str, args: &[&str]) {
    let mut direct = vec!["-n", "pb", "create"];
    direct.extend_from_slice(args);
    s.ok(&direct);
    // The flags go before the arguments: a job's command follows `--`.
    let mut dry = vec!["-n", "js", "create", "-o", "json", "--dry-run=client"];
    dry.extend_from_slice(args);
    let json = s.ok(&dry);
    let out = s.kubectl_stdin(&["-n", "js", "create", "-f", "-"], Some(&json));
    assert!(
        out.status.success(),
        "create -f - of {json}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (stored(s, "pb", kind, name), stored(s, "js", kind, name));
    assert_eq!(
        a, b,
        "{args:?}: protobuf (left) and JSON (right) stored different objects"
    );
}

#[test]
fn typed_generators_store_what_their_json_form_stores() {
    let s = Server::start("protobuf");
    s.ok(&["create", "namespace", "pb"]);
    s.ok(&["create", "namespace", "js"]);
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "deployment",
            "web",
            &[
                "deployment",
                "web",
                "--image=busybox",
                "--replicas=3",
                "--port=8080",
            ],
        ),
        (
            "deployment",
            "none",
            &["deployment", "none", "--image=busybox:1.36", "--replicas=0"],
        ),
        (
            "job",
            "once",
            &["job", "once", "--image=busybox", "--", "echo", "hi"],
        ),
        (
            "cronjob",
            "tick",
            &[
                "cronjob",
                "tick",
                "--image=busybox",
                "--schedule=*/5 * * * *",
                "--",
                "date",
            ],
        ),
        (
            "service",
            "svc",
            &["service", "clusterip", "svc", "--tcp=80:8080"],
        ),
        (
            "service",
            "np",
            &["service", "nodeport", "np", "--tcp=443:8443"],
        ),
        (
            "role",
            "reader",
            &[
                "role",
                "reader",
                "--verb=get,list,watch",
                "--resource=pods,deployments.apps",
            ],
        ),
        (
            "rolebinding",
            "rb",
            &[
                "rolebinding",
                "rb",
                "--role=reader",
                "--user=alice",
                "--group=devs",
            ],
        ),
        (
            "resourcequota",
            "q",
            &["quota", "q", "--hard=cpu=1,memory=1G,pods=10"],
        ),
        (
            "poddisruptionbudget",
            "pdb",
            &[
                "poddisruptionbudget",
                "pdb",
                "--selector=app=web",
                "--min-available=50%",
            ],
        ),
        (
            "ingress",
            "ing",
            &["ingress", "ing", "--rule=foo.com/bar=svc:8080"],
        ),
    ];
    for (kind, name, args) in cases {
        same_both_ways(&s, kind, name, args);
    }
    // The spot checks that matter to the controllers: numbers, int-or-string, nested lists.
    assert_eq!(
        s.ok(&[
            "-n",
            "pb",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}"
        ]),
        "3 8080"
    );
    assert_eq!(
        s.ok(&[
            "-n",
            "pb",
            "get",
            "deploy",
            "none",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "0",
        "an explicit zero survives"
    );
    assert_eq!(
        s.ok(&[
            "-n",
            "pb",
            "get",
            "svc",
            "svc",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ]),
        "8080"
    );
    // Cluster-scoped: a PriorityClass through both paths under two names.
    s.ok(&[
        "create",
        "priorityclass",
        "high",
        "--value=1000",
        "--description=top",
    ]);
    let json = s.ok(&[
        "create",
        "priorityclass",
        "low",
        "--value=10",
        "-o",
        "json",
        "--dry-run=client",
    ]);
    s.kubectl_stdin(&["create", "-f", "-"], Some(&json));
    assert_eq!(
        s.ok(&[
            "get",
            "pc",
            "high",
            "-o",
            "jsonpath={.value} {.description}"
        ]),
        "1000 top"
    );
    assert_eq!(s.ok(&["get", "pc", "low", "-o", "jsonpath={.value}"]), "10");
}

#[test]
fn a_malformed_protobuf_body_is_refused_with_its_field_path() {
    let s = Server::start("protobuf-bad");
    // A Deployment whose container name is not UTF-8, posted as kubectl would.
    let mut raw = Vec::new();
    let name = [0xffu8];
    let container = [&[0x0a, 1][..], &name].concat();
    let pod_spec = [&[0x12, container.len() as u8][..], &container].concat();
    let template = [&[0x12, pod_spec.len() as u8][..], &pod_spec].concat();
    let spec = [&[0x1a, template.len() as u8][..], &template].concat();
    raw.extend_from_slice(&[0x12, spec.len() as u8]);
    raw.extend_from_slice(&spec);
    let tm = b"\x0a\x07apps/v1\x12\x0aDeployment";
    let mut body = b"k8s\0".to_vec();
    body.extend_from_slice(&[0x0a, tm.len() as u8]);
    body.extend_from_slice(tm);
    body.extend_from_slice(&[0x12, raw.len() as u8]);
    body.extend_from_slice(&raw);
    let path = s.dir.join("bad.pb");
    std::fs::write(&path, &body).expect("write");
    let out = s.kubectl(&[
        "create",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments",
        "-f",
        path.to_str().expect("path"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted a malformed body");
    assert!(
        err.contains("spec.template.spec.containers[0].name"),
        "the error names the field: {err}"
    );
    assert_eq!(
        s.ok(&["get", "deploy", "-o", "name"]),
        "",
        "nothing was stored"
    );
}
