//! The installed kubectl against a real server: CRDs, upstream fixtures, tables, patches, scale,
//! finalizers, watches, server-side apply and refusals with field paths.

mod common;

use common::{Server, crds_file, fixture};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn with_crds(tag: &str) -> Server {
    let s = Server::start(tag);
    let crds = crds_file(&s.dir);
    let out = s.ok(&["apply", "-f", crds.to_str().unwrap()]);
    assert_eq!(
        out.lines().filter(|l| l.contains("created")).count(),
        kubevirt_api::object::KINDS.len(),
        "{out}"
    );
    s
}

#[test]
fn crds_and_upstream_vms_through_kubectl() {
    let s = with_crds("vm");
    assert!(
        s.ok(&["get", "crd"])
            .contains("virtualmachines.kubevirt.io")
    );
    s.ok(&["apply", "-f", &fixture("kubevirt-examples-vm-cirros.yaml")]);
    let table = s.ok(&["get", "vm"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE", "STATUS", "READY"], "{table}");
    assert!(table.contains("vm-cirros"));
    let yaml = s.ok(&["get", "vm", "vm-cirros", "-o", "yaml"]);
    assert!(
        yaml.contains("runStrategy: Halted") && yaml.contains("type: q35"),
        "defaults applied:\n{yaml}"
    );
    assert!(
        s.ok(&["describe", "vm", "vm-cirros"])
            .contains("Run Strategy")
    );

    // Patches: merge, JSON, status subresource (shown in the STATUS column).
    s.ok(&[
        "patch",
        "vm",
        "vm-cirros",
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Always"}}"#,
    ]);
    s.ok(&[
        "patch",
        "vm",
        "vm-cirros",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/extra","value":"yes"}]"#,
    ]);
    s.ok(&[
        "patch",
        "vm",
        "vm-cirros",
        "--type=merge",
        "--subresource=status",
        "-p",
        r#"{"status":{"printableStatus":"Running"}}"#,
    ]);
    let row = s.ok(&["get", "vm", "vm-cirros", "--no-headers"]);
    assert!(row.contains("Running"), "{row}");
    let generation = s.ok(&[
        "get",
        "vm",
        "vm-cirros",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(generation, "2", "only the spec change bumps generation");

    // Server-side apply of another upstream VM.
    s.ok(&[
        "apply",
        "--server-side",
        "-f",
        &fixture("kubevirt-examples-vm-alpine-datavolume.yaml"),
    ]);
    assert!(s.ok(&["get", "vm"]).contains("vm-alpine-datavolume"));
}

#[test]
fn scale_a_replica_set() {
    let s = with_crds("scale");
    s.ok(&[
        "apply",
        "-f",
        &fixture("kubevirt-examples-vmi-replicaset-cirros.yaml"),
    ]);
    s.ok(&["scale", "vmirs", "vmi-replicaset-cirros", "--replicas=3"]);
    assert_eq!(
        s.ok(&[
            "get",
            "vmirs",
            "vmi-replicaset-cirros",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );
    let table = s.ok(&["get", "vmirs"]);
    assert!(table.lines().next().unwrap().contains("DESIRED"), "{table}");
}

#[test]
fn invalid_objects_are_refused_with_the_field_path() {
    let s = with_crds("invalid");
    let bad_bus = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: bad}\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain:\n        devices:\n          disks: [{name: root, disk: {bus: ide}}]\n      volumes: [{name: root, containerDisk: {image: x}}]\n";
    let err = s.fails(&["apply", "-f", "-"], Some(bad_bus));
    assert!(
        err.contains("spec.template.spec.domain.devices.disks[0].disk.bus"),
        "{err}"
    );
    let unknown = bad_bus.replace("bus: ide", "bus: virtio, buss: x");
    let err = s.fails(&["apply", "-f", "-"], Some(&unknown));
    assert!(
        err.contains("unknown field") && err.contains("buss"),
        "{err}"
    );
    let wrong_type = bad_bus.replace("runStrategy: Halted", "runStrategy: [1]");
    let err = s.fails(&["create", "-f", "-"], Some(&wrong_type));
    assert!(err.contains("spec.runStrategy"), "{err}");
    assert!(
        s.kubectl(&["get", "vm", "bad"]).status.code() != Some(0),
        "nothing was stored"
    );
}

#[test]
fn a_vm_held_by_a_snapshot_or_restore_keeps_its_spec() {
    let s = with_crds("vmlock");
    let vm = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {name: held}\nspec:\n  runStrategy: Halted\n  template:\n    spec:\n      domain: {devices: {}, memory: {guest: 64Mi}}\n";
    let created = s.kubectl_stdin(&["apply", "-f", "-"], Some(vm));
    assert!(created.status.success(), "{created:?}");
    let hold = |field: &str, value: &str| {
        let patch = format!(r#"{{"status":{{"{field}":{value}}}}}"#);
        s.ok(&[
            "patch",
            "vm",
            "held",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ]);
    };
    let start = [
        "patch",
        "vm",
        "held",
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Always"}}"#,
    ];

    hold("snapshotInProgress", r#""snap1""#);
    let err = s.fails(&start, None);
    assert!(
        err.contains("spec: Cannot update VM spec until snapshot \"snap1\" completes"),
        "{err}"
    );
    s.ok(&["label", "vm", "held", "team=a"]);

    hold("snapshotInProgress", "null");
    hold("restoreInProgress", r#""restore1""#);
    let err = s.fails(&start, None);
    assert!(
        err.contains("spec: Cannot start VM until restore \"restore1\" completes"),
        "{err}"
    );
    // The restore itself rewrites the spec of the halted VM.
    s.ok(&[
        "patch",
        "vm",
        "held",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"metadata":{"labels":{"restored":"yes"}}}}}"#,
    ]);
    assert_eq!(
        s.ok(&["get", "vm", "held", "-o", "jsonpath={.spec.runStrategy}"]),
        "Halted"
    );

    hold("restoreInProgress", "null");
    s.ok(&start);
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let s = with_crds("finalizers");
    s.ok(&["apply", "-f", &fixture("kubevirt-examples-vm-cirros.yaml")]);
    s.ok(&[
        "patch",
        "vm",
        "vm-cirros",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    s.ok(&["delete", "vm", "vm-cirros", "--wait=false"]);
    let ts = s.ok(&[
        "get",
        "vm",
        "vm-cirros",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!ts.is_empty(), "marked for deletion");
    s.ok(&[
        "patch",
        "vm",
        "vm-cirros",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let err = s.fails(&["get", "vm", "vm-cirros"], None);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn get_watch_sees_changes() {
    let s = with_crds("watch");
    let mut watch = Command::new("kubectl")
        .env("KUBECONFIG", &s.kubeconfig)
        .args([
            "--cache-dir",
            s.dir.join("kubectl-cache").to_str().unwrap(),
            "get",
            "vm",
            "-w",
            "--output-watch-events",
            "--request-timeout=30s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.ok(&["apply", "-f", &fixture("kubevirt-examples-vm-cirros.yaml")]);
    s.ok(&["delete", "vm", "vm-cirros"]);
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline
        && !seen.iter().any(|l: &String| l.starts_with("DELETED"))
    {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("ADDED") && l.contains("vm-cirros")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("DELETED") && l.contains("vm-cirros")),
        "{seen:?}"
    );
}

#[test]
fn requests_without_the_token_are_refused() {
    let s = Server::start("auth");
    let out = s.kubectl(&["get", "ns", "--token=wrong"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Unauthorized") || err.contains("provide credentials"),
        "{err}"
    );
    assert!(s.ok(&["get", "ns"]).contains("default"));
}

const WIDGET_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [min]
            x-kubernetes-validations:
            - {rule: "self.min <= self.max", message: "min must not exceed max", fieldPath: ".min"}
            properties:
              min: {type: integer}
              max: {type: integer, default: 10}
              color: {type: string, enum: [red, blue]}
"#;

fn widget(spec: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w}}\nspec: {spec}\n")
}

#[test]
fn any_crd_gets_schema_defaults_pruning_and_cel() {
    let s = Server::start("widgets");
    let out = s.kubectl_stdin(&["apply", "-f", "-"], Some(WIDGET_CRD));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.kubectl_stdin(&["apply", "-f", "-"], Some(&widget("{min: 3}")));
    assert_eq!(
        s.ok(&["get", "wd", "w", "-o", "jsonpath={.spec.max}"]),
        "10",
        "schema default applied"
    );
    let err = s.fails(&["apply", "-f", "-"], Some(&widget("{min: 30}")));
    assert!(
        err.contains("spec.min") && err.contains("min must not exceed max"),
        "{err}"
    );
    let err = s.fails(
        &["apply", "-f", "-"],
        Some(&widget("{min: 1, color: green}")),
    );
    assert!(
        err.contains("spec.color") && err.contains("Unsupported value"),
        "{err}"
    );
    let err = s.fails(
        &["apply", "-f", "-"],
        Some(&widget("{min: 1, shade: dark}")),
    );
    assert!(
        err.contains("unknown field") && err.contains("spec.shade"),
        "{err}"
    );
    let out = s.kubectl_stdin(
        &["apply", "--validate=false", "-f", "-"],
        Some(&widget("{min: 2, shade: dark}")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        s.ok(&["get", "wd", "w", "-o", "jsonpath={.spec}"]),
        r#"{"max":10,"min":2}"#,
        "unknown field pruned"
    );
}

#[test]
fn server_side_apply_owns_fields() {
    let s = Server::start("ssa");
    s.kubectl_stdin(&["apply", "-f", "-"], Some(WIDGET_CRD));
    let apply = |spec: &str, extra: &[&str]| {
        let mut args = vec!["apply", "--server-side", "-f", "-"];
        args.extend_from_slice(extra);
        s.kubectl_stdin(&args, Some(&widget(spec)))
    };
    assert!(apply("{min: 1, color: red}", &[]).status.success());
    assert!(apply("{min: 1}", &[]).status.success());
    assert_eq!(
        s.ok(&["get", "wd", "w", "-o", "jsonpath={.spec}"]),
        r#"{"max":10,"min":1}"#,
        "color no longer applied, so removed"
    );
    let out = apply("{min: 2}", &["--field-manager=other"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("conflict") && err.contains(".spec.min"),
        "{err}"
    );
    assert!(
        apply("{min: 2}", &["--field-manager=other", "--force-conflicts"])
            .status
            .success()
    );
    assert_eq!(s.ok(&["get", "wd", "w", "-o", "jsonpath={.spec.min}"]), "2");
}

#[test]
fn typed_create_generators_send_protobuf_and_work() {
    let s = Server::start("generators");
    s.ok(&["create", "namespace", "vms"]);
    s.ok(&[
        "-n",
        "vms",
        "create",
        "configmap",
        "cfg",
        "--from-literal=mode=fast",
    ]);
    s.ok(&[
        "-n",
        "vms",
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    s.ok(&["-n", "vms", "create", "serviceaccount", "virt"]);
    assert_eq!(
        s.ok(&["get", "ns", "vms", "-o", "jsonpath={.status.phase}"]),
        "Active"
    );
    assert_eq!(
        s.ok(&[
            "-n",
            "vms",
            "get",
            "cm",
            "cfg",
            "-o",
            "jsonpath={.data.mode}"
        ]),
        "fast"
    );
    assert_eq!(
        s.ok(&[
            "-n",
            "vms",
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.data.password}"
        ]),
        "czNjcmV0"
    );
    assert_eq!(
        s.ok(&[
            "-n",
            "vms",
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.type}"
        ]),
        "Opaque"
    );
    assert!(s.ok(&["-n", "vms", "get", "sa"]).contains("virt"));
}

#[test]
fn crds_installed_by_server_side_apply_are_established() {
    let s = Server::start("ssa-crds");
    let crds = crds_file(&s.dir);
    s.ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    s.ok(&[
        "wait",
        "--for=condition=Established",
        "crd/virtualmachines.kubevirt.io",
        "--timeout=10s",
    ]);
    s.ok(&[
        "apply",
        "--server-side",
        "-f",
        &fixture("kubevirt-examples-vm-cirros.yaml"),
    ]);
    assert!(s.ok(&["get", "vm"]).contains("vm-cirros"));
}

/// `--dry-run=server` changes nothing, for every verb kubectl has it on. kubectl sends it in the
/// query for writes and in the DeleteOptions body for deletes (a real VM was once deleted by
/// `kubectl delete vm --dry-run=server`).
#[test]
fn server_dry_run_changes_nothing_for_any_verb() {
    let s = with_crds("dryrun");
    s.ok(&["create", "configmap", "keep", "--from-literal=k=v"]);
    s.ok(&["apply", "-f", &fixture("kubevirt-examples-vm-cirros.yaml")]);
    s.ok(&[
        "apply",
        "-f",
        &fixture("kubevirt-examples-vmi-replicaset-cirros.yaml"),
    ]);
    let state = |s: &Server| {
        s.ok(&[
            "get",
            "configmaps,vm,vmirs",
            "-o",
            "custom-columns=NAME:.metadata.name,RV:.metadata.resourceVersion,LABELS:.metadata.labels,DATA:.data,RS:.spec.runStrategy,REPLICAS:.spec.replicas",
        ])
    };
    let before = state(&s);
    let dry = "--dry-run=server";

    let out = s.ok(&["create", "configmap", "new", "--from-literal=a=b", dry]);
    assert!(out.contains("server dry run"), "{out}");
    s.ok(&["label", "vm", "vm-cirros", "dry=yes", dry]);
    s.ok(&["annotate", "configmap", "keep", "dry=yes", dry]);
    s.ok(&[
        "patch",
        "vm",
        "vm-cirros",
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Always"}}"#,
        dry,
    ]);
    let replaced = s
        .ok(&["get", "configmap", "keep", "-o", "yaml"])
        .replace("k: v", "k: replaced");
    s.kubectl_stdin(&["replace", "-f", "-", dry], Some(&replaced));
    s.ok(&[
        "scale",
        "vmirs",
        "vmi-replicaset-cirros",
        "--replicas=5",
        dry,
    ]);
    let out = s.ok(&["delete", "vm", "vm-cirros", dry]);
    assert!(out.contains("deleted (server dry run)"), "{out}");
    s.ok(&["delete", "configmap", "keep", dry]);
    // deletecollection
    s.ok(&["delete", "configmaps,vm,vmirs", "--all", dry]);

    assert_eq!(state(&s), before, "a server dry run changed stored objects");
    assert!(
        s.kubectl(&["get", "configmap", "new"]).status.code() != Some(0),
        "a dry-run create stored nothing"
    );

    // A dryRun value other than All is refused rather than taken as a real delete.
    let err = s.fails(
        &[
            "delete",
            "--raw",
            "/api/v1/namespaces/default/configmaps/keep?dryRun=Some",
        ],
        None,
    );
    assert!(err.contains("dryRun: Unsupported value"), "{err}");
    s.ok(&["get", "configmap", "keep"]);

    // And a real delete still deletes.
    s.ok(&["delete", "vm", "vm-cirros", "--wait=false"]);
    let err = s.fails(&["get", "vm", "vm-cirros"], None);
    assert!(err.contains("NotFound"), "{err}");
}
