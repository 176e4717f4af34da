//! Pods talk to the API server as upstream's do (issue 13): the ServiceAccount admission gives
//! every pod the `kube-api-access-xxxxx` projected volume (a bound token, the cluster CA, its
//! namespace), the kubelet writes it and sets `KUBERNETES_SERVICE_HOST`/`PORT`, and the API
//! server listens on the pod network's gateway with a certificate valid there: the real
//! kubectl, run inside a pod with no kubeconfig, reads its own pod through in-cluster config.
//! The downward API reaches the pod too (a `downwardAPI` volume, `resourceFieldRef` in env).

mod common;

use common::node::*;
use kubevirt_testsupport::oci::busybox_image;
use kubevirt_testsupport::tempdir;
use serde_json::Value;

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: incluster
  labels: {app: demo}
spec:
  nodeName: NODE
  terminationGracePeriodSeconds: 1
  volumes:
  - name: podinfo
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
  containers:
  - name: main
    image: IMAGE
    resources: {limits: {memory: 64Mi}}
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: MEM
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    volumeMounts:
    - {name: podinfo, mountPath: /etc/podinfo}
    command: ["/bin/sh", "-c"]
    args:
    - |
      echo "seen=$(kubectl get pod $POD_NAME -o jsonpath='{.metadata.name}/{.spec.serviceAccountName}')"
      echo "ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"
      echo "host=$KUBERNETES_SERVICE_HOST mem=$MEM"
      echo "labels=$(cat /etc/podinfo/labels)"
      exec sleep 3600
"#;

#[test]
fn kubectl_in_a_pod_reaches_the_api_server_with_its_service_account() {
    require_node!();
    let _node = node_slot();
    let im = images();
    let kubectl = std::fs::read("/usr/bin/kubectl").expect("the kubectl binary");
    let image = busybox_image()
        .unwrap()
        .file("bin/kubectl", kubectl, 0o755)
        .build()
        .unwrap();
    let reference = im.registry.push("test/kubectl", "1", &image).unwrap();
    let dir = tempdir("pods-serviceaccount");
    let up = start_up(&dir, "kv-sa", &im);
    // The pod's service account may read pods in its namespace (RBAC, as on a cluster).
    up.ok(
        &[
            "create",
            "rolebinding",
            "default-view",
            "--clusterrole=view",
            "--serviceaccount=default:default",
        ],
        None,
    );
    up.run_pod(&POD.replace("IMAGE", &reference));

    let pod: Value = running_pod(&up, "incluster");
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .expect("the service account volume is injected");
    assert_eq!(
        volume["projected"]["sources"][0]["serviceAccountToken"]["path"],
        "token"
    );

    let logs = eventually("the pod reports what it saw", 60, || {
        let l = up.ok(&["logs", "incluster"], None);
        l.contains("labels=").then_some(l)
    });
    assert!(
        logs.contains("seen=incluster/default"),
        "kubectl in the pod read its pod: {logs}"
    );
    assert!(logs.contains("ns=default"), "{logs}");
    let gateway = common::slot::network().gateway;
    assert!(logs.contains(&format!("host={gateway} mem=64")), "{logs}");
    assert!(logs.contains("labels=app=\"demo\""), "{logs}");

    up.ok(&["delete", "pod", "incluster", "--wait=true"], None);
    drop(up);
    assert_nothing_left(&dir);
}
