//! Storage's control-plane roles against the real kubectl and `kubevirt-local up --no-node`:
//! the StorageClass kind and `up`'s default class, DefaultStorageClass admission, the claim's
//! update rules (immutability, resize, no shrinking), the PV binder (static binding, Released,
//! dynamic provisioning's annotations) and the scheduler's VolumeBinding (WaitForFirstConsumer,
//! missing and unbound claims, volume node affinity). The test plays the provisioner and the
//! kubelet: it writes the PVs and the Nodes itself.

mod common;

use common::plane::Plane;
use kubevirt_testsupport::eventually;
use serde_json::{Value, json};

fn apply(p: &Plane, obj: &Value) {
    p.ok_in(&["apply", "-f", "-"], Some(&obj.to_string()));
}

fn class(name: &str, provisioner: &str, mode: &str, expand: bool) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
        "provisioner": provisioner, "volumeBindingMode": mode, "allowVolumeExpansion": expand})
}

fn claim(name: &str, class: Option<&str>, size: &str) -> Value {
    let mut c = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}});
    if let Some(class) = class {
        c["spec"]["storageClassName"] = json!(class);
    }
    c
}

fn volume(name: &str, class: &str, size: &str, extra: Value) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": class, "hostPath": {"path": format!("/tmp/{name}")}}});
    json_patch::merge(&mut v, &extra);
    v
}

fn on_node(node: &str) -> Value {
    json!({"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}})
}

fn pod_using(name: &str, claim: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                   "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}})
}

fn phase(p: &Plane, what: &str, name: &str) -> String {
    p.get(&[what, name], "{.status.phase}")
}

fn wait_phase(p: &Plane, what: &str, name: &str, want: &str) {
    eventually(&format!("{what} {name} {want}"), || {
        (phase(p, what, name) == want).then_some(())
    });
}

/// The first line of `kubectl get` output that starts with `name`, split into columns.
fn row(p: &Plane, what: &str, name: &str) -> Vec<String> {
    let out = p.ok(&["get", what]);
    let line = out
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in:\n{out}"));
    line.split_whitespace().map(str::to_string).collect()
}

fn header(p: &Plane, what: &str) -> String {
    let out = p.ok(&["get", what]);
    out.lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// kubectl that must fail; its stderr.
fn refused(p: &Plane, args: &[&str]) -> String {
    let out = p.kubectl(args, None);
    assert!(!out.status.success(), "kubectl {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn classes_defaults_static_binding_and_claim_rules() {
    let p = Plane::start("volumes-static");

    // `up`'s default class, as kubectl prints it.
    assert_eq!(
        header(&p, "sc"),
        "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE"
    );
    let local = row(&p, "sc", "local");
    assert_eq!(
        local[..6],
        [
            "local",
            "(default)",
            "kubevirt-rs.io/local-volume",
            "Delete",
            "WaitForFirstConsumer",
            "true"
        ]
    );
    // Classes are applied like any kind; unset fields print their defaults.
    apply(
        &p,
        &json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "manual"}, "provisioner": "kubernetes.io/no-provisioner"}),
    );
    assert_eq!(
        row(&p, "storageclass", "manual")[..5],
        [
            "manual",
            "kubernetes.io/no-provisioner",
            "Delete",
            "Immediate",
            "false"
        ]
    );
    apply(
        &p,
        &class("grow", "kubernetes.io/no-provisioner", "Immediate", true),
    );

    // DefaultStorageClass: a claim without a class gets `local`; an empty class stays empty.
    apply(&p, &claim("plain", None, "1Gi"));
    assert_eq!(
        p.get(&["pvc", "plain"], "{.spec.storageClassName}"),
        "local"
    );
    assert_eq!(p.get(&["pvc", "plain"], "{.spec.volumeMode}"), "Filesystem");
    assert_eq!(phase(&p, "pvc", "plain"), "Pending");
    apply(&p, &claim("classless", Some(""), "1Gi"));
    assert_eq!(p.get(&["pvc", "classless"], "{.spec.storageClassName}"), "");

    // Static binding: the smallest fitting Available volume of the claim's class.
    apply(&p, &volume("pv-big", "manual", "5Gi", json!({})));
    apply(&p, &volume("pv-small", "manual", "1Gi", json!({})));
    apply(&p, &volume("pv-tiny", "manual", "100Mi", json!({})));
    apply(&p, &volume("pv-grow", "grow", "2Gi", json!({})));
    assert_eq!(
        p.get(&["pv", "pv-big"], "{.spec.persistentVolumeReclaimPolicy}"),
        "Retain"
    );
    wait_phase(&p, "pv", "pv-big", "Available");
    assert!(
        !p.get(&["pv", "pv-big"], "{.status.lastPhaseTransitionTime}")
            .is_empty(),
        "the phase change is dated"
    );
    apply(&p, &claim("data", Some("manual"), "500Mi"));
    wait_phase(&p, "pvc", "data", "Bound");
    assert_eq!(
        header(&p, "pvc"),
        "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE"
    );
    assert_eq!(
        row(&p, "pvc", "data")[..7],
        [
            "data", "Bound", "pv-small", "1Gi", "RWO", "manual", "<unset>"
        ]
    );
    wait_phase(&p, "pv", "pv-small", "Bound");
    assert_eq!(
        header(&p, "pv"),
        "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE"
    );
    assert_eq!(
        row(&p, "pv", "pv-small")[..7],
        [
            "pv-small",
            "1Gi",
            "RWO",
            "Retain",
            "Bound",
            "default/data",
            "manual"
        ]
    );
    assert_eq!(
        p.get(&["pvc", "data"], "{.metadata.annotations.pv\\.kubernetes\\.io/bind-completed} {.metadata.annotations.pv\\.kubernetes\\.io/bound-by-controller}"),
        "yes yes"
    );
    assert_eq!(
        p.get(&["pv", "pv-small"], "{.spec.claimRef.uid}"),
        p.get(&["pvc", "data"], "{.metadata.uid}")
    );
    assert_eq!(phase(&p, "pv", "pv-big"), "Available");
    assert_eq!(phase(&p, "pv", "pv-tiny"), "Available");

    // A claim pre-bound to a volume by name gets that one, not the smallest fit.
    let mut pre = claim("pre", Some("manual"), "10Mi");
    pre["spec"]["volumeName"] = json!("pv-big");
    apply(&p, &pre);
    wait_phase(&p, "pvc", "pre", "Bound");
    assert_eq!(p.get(&["pv", "pv-big"], "{.spec.claimRef.name}"), "pre");
    assert_eq!(p.get(&["pvc", "pre"], "{.status.capacity.storage}"), "5Gi");

    // A claim's spec is immutable but for a bound claim's requests: errors name the field,
    // and nothing changes.
    let err = refused(
        &p,
        &[
            "patch",
            "pvc",
            "data",
            "--type=merge",
            "-p",
            r#"{"spec":{"accessModes":["ReadWriteMany"]}}"#,
        ],
    );
    assert!(err.contains("spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"), "{err}");
    let err = refused(
        &p,
        &[
            "patch",
            "pvc",
            "data",
            "--type=merge",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"100Mi"}}}}"#,
        ],
    );
    assert!(
        err.contains(
            "spec.resources.requests.storage: Forbidden: field can not be less than status.capacity"
        ),
        "{err}"
    );
    // Growing needs a class that allows expansion.
    let err = refused(
        &p,
        &[
            "patch",
            "pvc",
            "data",
            "--type=merge",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}"#,
        ],
    );
    assert!(err.contains("persistentvolumeclaims \"data\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"), "{err}");
    assert_eq!(
        p.get(
            &["pvc", "data"],
            "{.spec.accessModes[0]} {.spec.resources.requests.storage}"
        ),
        "ReadWriteOnce 500Mi"
    );
    // An unbound claim's requests are immutable too.
    let err = refused(
        &p,
        &[
            "patch",
            "pvc",
            "classless",
            "--type=merge",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
        ],
    );
    assert!(err.contains("spec: Forbidden: spec is immutable"), "{err}");
    // In an expandable class a bound claim grows.
    apply(&p, &claim("growing", Some("grow"), "1Gi"));
    wait_phase(&p, "pvc", "growing", "Bound");
    p.ok(&[
        "patch",
        "pvc",
        "growing",
        "--type=merge",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"4Gi"}}}}"#,
    ]);
    assert_eq!(
        p.get(&["pvc", "growing"], "{.spec.resources.requests.storage}"),
        "4Gi"
    );

    // Many claims for few volumes, all at once: each volume goes to exactly one claim.
    let mut burst = String::new();
    for i in 0..4 {
        burst += &volume(&format!("race-pv{i}"), "race", "1Gi", json!({})).to_string();
    }
    for i in 0..7 {
        burst += &claim(&format!("race-c{i}"), Some("race"), "1Gi").to_string();
    }
    p.ok_in(&["apply", "-f", "-"], Some(&burst));
    let pairs = eventually("four race claims bound", || {
        let out = p.ok(&["get", "pvc", "-o", "jsonpath={range .items[?(@.spec.storageClassName==\"race\")]}{.metadata.name}={.spec.volumeName} {end}"]);
        let bound: Vec<(String, String)> = out
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (bound.len() == 4).then_some(bound)
    });
    let mut volumes: Vec<&str> = pairs.iter().map(|(_, v)| v.as_str()).collect();
    volumes.sort();
    volumes.dedup();
    assert_eq!(volumes.len(), 4, "a volume went to two claims: {pairs:?}");
    for (c, v) in &pairs {
        assert_eq!(&p.get(&["pv", v], "{.spec.claimRef.name}"), c);
        wait_phase(&p, "pvc", c, "Bound");
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let pending = p.ok(&[
        "get",
        "pvc",
        "-o",
        "jsonpath={range .items[?(@.status.phase==\"Pending\")]}{.metadata.name} {end}",
    ]);
    assert_eq!(pending.matches("race-c").count(), 3, "{pending}");

    // The claim goes: its Retain volume is Released, and stays.
    p.ok(&["delete", "pvc", "data", "--wait=true"]);
    wait_phase(&p, "pv", "pv-small", "Released");
    assert_eq!(row(&p, "pv", "pv-small")[4], "Released");
}

#[test]
fn wait_for_first_consumer_and_unschedulable_claims() {
    let p = Plane::start("volumes-wffc");
    p.node(
        "node-a",
        json!({"cpu": "4", "memory": "4Gi", "pods": "10"}),
        json!({}),
    );

    // A WaitForFirstConsumer claim waits without a consumer.
    apply(&p, &claim("disk", None, "1Gi"));
    let events = eventually("a WaitForFirstConsumer event", || {
        let out = p.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=disk",
            "-o",
            "jsonpath={.items[*].reason}: {.items[*].message}",
        ]);
        out.contains("WaitForFirstConsumer").then_some(out)
    });
    assert!(
        events.contains("waiting for first consumer to be created before binding"),
        "{events}"
    );

    // Its first consumer: the scheduler picks the node and names it in the claim; the binder
    // asks the class's provisioner; the pod waits for the volume.
    apply(&p, &pod_using("user", "disk"));
    let selected = eventually("the selected node", || {
        let n = p.get(
            &["pvc", "disk"],
            "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}",
        );
        (!n.is_empty()).then_some(n)
    });
    assert_eq!(selected, "node-a");
    eventually("the provisioner annotations", || {
        let a = p.get(&["pvc", "disk"], "{.metadata.annotations.volume\\.kubernetes\\.io/storage-provisioner} {.metadata.annotations.volume\\.beta\\.kubernetes\\.io/storage-provisioner}");
        (a == "kubevirt-rs.io/local-volume kubevirt-rs.io/local-volume").then_some(())
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        p.get(&["pod", "user"], "{.spec.nodeName}"),
        "",
        "bound before its claim"
    );
    assert_eq!(phase(&p, "pvc", "disk"), "Pending");

    // The provisioner's volume appears: claim and pod are bound.
    let uid = p.get(&["pvc", "disk"], "{.metadata.uid}");
    let mut pv = volume(
        &format!("pvc-{uid}"),
        "local",
        "1Gi",
        json!({"spec": on_node("node-a")}),
    );
    pv["metadata"]["annotations"] =
        json!({"pv.kubernetes.io/provisioned-by": "kubevirt-rs.io/local-volume"});
    pv["spec"]["claimRef"] = json!({"namespace": "default", "name": "disk", "uid": uid});
    pv["spec"]["persistentVolumeReclaimPolicy"] = json!("Delete");
    apply(&p, &pv);
    wait_phase(&p, "pvc", "disk", "Bound");
    assert_eq!(
        p.get(&["pvc", "disk"], "{.spec.volumeName}"),
        format!("pvc-{uid}")
    );
    eventually("user bound", || {
        (p.get(&["pod", "user"], "{.spec.nodeName}") == "node-a").then_some(())
    });

    // A missing claim: unschedulable, in upstream's words.
    apply(&p, &pod_using("orphan", "nope"));
    let message = "{.status.conditions[?(@.type==\"PodScheduled\")].message}";
    eventually("orphan unschedulable", || {
        (p.get(&["pod", "orphan"], message)
            == "0/1 nodes are available: persistentvolumeclaim \"nope\" not found.")
            .then_some(())
    });
    // Once the claim exists (and binds), the pod goes.
    apply(&p, &claim("nope", None, "1Gi"));
    eventually("nope's node selected", || {
        (p.get(
            &["pvc", "nope"],
            "{.metadata.annotations.volume\\.kubernetes\\.io/selected-node}",
        ) == "node-a")
            .then_some(())
    });

    // An unbound Immediate claim of an external provisioner.
    apply(&p, &class("slow", "example.com/slow", "Immediate", false));
    apply(&p, &claim("later", Some("slow"), "1Gi"));
    eventually("the ExternalProvisioning event", || {
        let out = p.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=later,reason=ExternalProvisioning",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        out.contains("Waiting for a volume to be created either by the external provisioner 'example.com/slow' or manually by the system administrator").then_some(())
    });
    apply(&p, &pod_using("impatient", "later"));
    eventually("impatient unschedulable", || {
        (p.get(&["pod", "impatient"], message)
            == "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims.")
            .then_some(())
    });

    // A bound volume on another node.
    apply(
        &p,
        &class("manual", "kubernetes.io/no-provisioner", "Immediate", false),
    );
    apply(
        &p,
        &volume(
            "far-pv",
            "manual",
            "1Gi",
            json!({"spec": on_node("node-b")}),
        ),
    );
    apply(&p, &claim("far", Some("manual"), "1Gi"));
    wait_phase(&p, "pvc", "far", "Bound");
    apply(&p, &pod_using("stranded", "far"));
    eventually("stranded unschedulable", || {
        (p.get(&["pod", "stranded"], message)
            == "0/1 nodes are available: 1 node(s) had volume node affinity conflict.")
            .then_some(())
    });
    assert_eq!(p.get(&["pod", "stranded"], "{.spec.nodeName}"), "");

    // WaitForFirstConsumer with administrator-made local volumes: the pod goes where a volume
    // is, the claim binds it; without one no node fits.
    apply(
        &p,
        &class(
            "local-static",
            "kubernetes.io/no-provisioner",
            "WaitForFirstConsumer",
            false,
        ),
    );
    apply(
        &p,
        &volume(
            "static-a",
            "local-static",
            "2Gi",
            json!({"spec": on_node("node-a")}),
        ),
    );
    apply(&p, &claim("near", Some("local-static"), "1Gi"));
    apply(&p, &pod_using("settler", "near"));
    eventually("settler bound", || {
        (p.get(&["pod", "settler"], "{.spec.nodeName}") == "node-a").then_some(())
    });
    assert_eq!(
        p.get(&["pvc", "near"], "{.spec.volumeName} {.status.phase}"),
        "static-a Bound"
    );
    apply(&p, &claim("nowhere", Some("local-static"), "1Gi"));
    apply(&p, &pod_using("homeless", "nowhere"));
    eventually("homeless unschedulable", || {
        (p.get(&["pod", "homeless"], message)
            == "0/1 nodes are available: 1 node(s) didn't find available persistent volumes to bind.")
            .then_some(())
    });
}

#[test]
fn classes_are_immutable_and_up_keeps_a_users_changes() {
    let p = Plane::start("volumes-classes");
    let err = refused(
        &p,
        &[
            "patch",
            "sc",
            "local",
            "--type=merge",
            "-p",
            r#"{"provisioner":"example.com/other","reclaimPolicy":"Retain"}"#,
        ],
    );
    assert!(
        err.contains("provisioner: Forbidden: updates to provisioner are forbidden."),
        "{err}"
    );
    assert!(
        err.contains("reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden."),
        "{err}"
    );
    // What may change, changes, and a restart keeps it.
    p.ok(&["patch", "sc", "local", "--type=merge", "-p",
        r#"{"allowVolumeExpansion":false,"metadata":{"annotations":{"storageclass.kubernetes.io/is-default-class":"false"}}}"#]);
    let p = Plane::start_in(p.stop());
    assert_eq!(
        row(&p, "sc", "local")[..5],
        [
            "local",
            "kubevirt-rs.io/local-volume",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ]
    );
    // No default class: a claim without one keeps none.
    apply(&p, &claim("plain", None, "1Gi"));
    assert_eq!(p.get(&["pvc", "plain"], "{.spec.storageClassName}"), "");
    // A deleted class comes back at the next start.
    p.ok(&["delete", "sc", "local"]);
    let p = Plane::start_in(p.stop());
    assert_eq!(row(&p, "sc", "local")[1], "(default)");
    // A claim that named no class gets the default once there is one again.
    eventually("plain given the default class", || {
        (p.get(&["pvc", "plain"], "{.spec.storageClassName}") == "local").then_some(())
    });
}
