//! `kubevirt-controller operator` (issue 18): the seed's install, `kubectl create -f
//! kubevirt-operator.yaml` then `kubectl create -f kubevirt-cr.yaml`, against our API server
//! with no CRDs installed, and the operator as two real child processes (one leads through
//! Lease virt-operator). The components appear and the CR says Deploying (Degraded while a
//! component pod cannot pull its image); once their workloads report ready it is Deployed and
//! `kubectl wait --for condition=Available` returns; a new imageTag rolls the images; a
//! malformed configuration is Degraded with its field path and changes nothing; a second CR is
//! left alone with upstream's condition; deleting the CR is held while a VM exists and removes
//! everything once it is gone; the leader stopped, the standby leads.
//!
//! The API server alone runs no workload controllers (no kube-controller-manager, no kubelet):
//! the test plays their part by writing the Deployments' and the DaemonSet's status with
//! `kubectl patch --subresource=status`.

#[allow(unused_imports)] // the shared module re-exports more than this test uses
mod common;

use std::process::{Child, Command, Stdio};

use common::{Cluster, eventually};

const NS: &str = "kubevirt";

/// The operator child, stopped when the test ends (also on failure).
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_operator(c: &Cluster, image: &str, pod: &str) -> Operator {
    let child = Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .args(["operator", "--kubeconfig"])
        .arg(&c.kubeconfig)
        .env("WATCH_NAMESPACE", NS)
        .env("VIRT_OPERATOR_IMAGE", image)
        .env("KUBEVIRT_VERSION", "v0.1.0")
        .env("POD_NAME", pod)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start kubevirt-controller operator");
    Operator(child)
}

async fn get(c: &Cluster, args: &[&str]) -> Option<String> {
    let (ok, out, _) = c.kubectl(args, None).await;
    ok.then(|| out.trim().to_string())
}

async fn kv_field(c: &Cluster, name: &str, path: &str) -> String {
    let jsonpath = format!("-o=jsonpath={path}");
    get(c, &["get", "kv", name, "-n", NS, &jsonpath])
        .await
        .unwrap_or_default()
}

/// `kubectl wait kv kubevirt --for=FOR --timeout=TIMEOUT`, which must succeed.
async fn wait_for_kv(c: &Cluster, condition: &str, timeout: &str) {
    let (ok, stdout, stderr) = c
        .kubectl(
            &[
                "wait",
                "kv",
                "kubevirt",
                "-n",
                NS,
                &format!("--for={condition}"),
                &format!("--timeout={timeout}"),
            ],
            None,
        )
        .await;
    assert!(ok, "kubectl wait --for={condition}: {stdout}{stderr}");
}

/// `kubectl patch kv NAME --type=merge -p PATCH`, which must succeed.
async fn patch_kv(c: &Cluster, name: &str, patch: &str) {
    let (ok, _, err) = c
        .kubectl(
            &["patch", "kv", name, "-n", NS, "--type=merge", "-p", patch],
            None,
        )
        .await;
    assert!(ok, "patching kv {name} with {patch}: {err}");
}

/// Waits until `kubectl get kv NAME -o jsonpath=PATH` prints `want`.
async fn wait_kv(c: &Cluster, name: &str, path: &str, want: &str) {
    eventually(&format!("kv {name}: {path} = {want:?}"), || async {
        (kv_field(c, name, path).await == want).then_some(())
    })
    .await;
}

/// Plays the workload controllers: every replica of the current template updated and
/// available.
async fn mark_ready(c: &Cluster) {
    for (kind, name) in [
        ("deployment", "virt-api"),
        ("deployment", "virt-controller"),
        ("daemonset", "virt-handler"),
    ] {
        let generation = get(
            c,
            &[
                "get",
                kind,
                name,
                "-n",
                NS,
                "-o=jsonpath={.metadata.generation}",
            ],
        )
        .await
        .expect(name);
        let status = if kind == "deployment" {
            format!(
                r#"{{"status":{{"observedGeneration":{generation},"replicas":1,"updatedReplicas":1,"readyReplicas":1,"availableReplicas":1}}}}"#
            )
        } else {
            format!(
                r#"{{"status":{{"observedGeneration":{generation},"desiredNumberScheduled":1,"currentNumberScheduled":1,"numberMisscheduled":0,"numberReady":1,"updatedNumberScheduled":1,"numberAvailable":1}}}}"#
            )
        };
        let (ok, _, err) = c
            .kubectl(
                &[
                    "patch",
                    kind,
                    name,
                    "-n",
                    NS,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    &status,
                ],
                None,
            )
            .await;
        assert!(ok, "marking {kind} {name} ready: {err}");
    }
}

async fn image_of(c: &Cluster, kind: &str, name: &str) -> String {
    get(
        c,
        &[
            "get",
            kind,
            name,
            "-n",
            NS,
            "-o=jsonpath={.spec.template.spec.containers[0].image}",
        ],
    )
    .await
    .unwrap_or_default()
}

const BROKEN_POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: virt-api-broken
  namespace: kubevirt
  labels: {kubevirt.io: virt-api}
spec:
  containers:
  - {name: virt-api, image: 127.0.0.1:5000/virt-api:v0.1.0}
";

const PULL_FAILURE: &str = r#"{"status":{"phase":"Pending","containerStatuses":[{"name":"virt-api","image":"127.0.0.1:5000/virt-api:v0.1.0","imageID":"","ready":false,"restartCount":0,"state":{"waiting":{"reason":"ErrImagePull","message":"127.0.0.1:5000/virt-api:v0.1.0: not found"}}}]}}"#;

const VM: &str = "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: keeper
  namespace: default
spec:
  runStrategy: Halted
  template:
    spec:
      domain:
        devices: {}
        memory:
          guest: 64Mi
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_installs_rolls_and_removes_kubevirt() {
    let c = Cluster::start_bare(true).await;
    let out = c.dir.join("release");
    let o = Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .args([
            "manifests",
            "--registry",
            "127.0.0.1:5000",
            "--tag",
            "v0.1.0",
            "--output-dir",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (operator_yaml, cr_yaml) = (
        out.join("kubevirt-operator.yaml"),
        out.join("kubevirt-cr.yaml"),
    );
    let (operator_yaml, cr_yaml) = (operator_yaml.to_str().unwrap(), cr_yaml.to_str().unwrap());

    // The seed's first command. (A server-side dry run of the file needs its namespace to
    // exist, so it is checked after the real create: it must be accepted as it stands.)
    let (ok, stdout, stderr) = c.kubectl(&["create", "-f", operator_yaml], None).await;
    assert!(
        ok,
        "kubectl create -f kubevirt-operator.yaml: {stdout}{stderr}"
    );
    let (ok, stdout, stderr) = c
        .kubectl(
            &[
                "apply",
                "--server-side",
                "--dry-run=server",
                "-f",
                operator_yaml,
            ],
            None,
        )
        .await;
    assert!(ok, "dry run: {stdout}{stderr}");
    let (ok, stdout, stderr) = c
        .kubectl(&["create", "--dry-run=server", "-f", cr_yaml], None)
        .await;
    assert!(ok, "dry run of the CR: {stdout}{stderr}");

    let image = "127.0.0.1:5000/virt-operator:v0.1.0";
    let mut leader = start_operator(&c, image, "virt-operator-a");
    let holder = || async {
        get(
            &c,
            &[
                "get",
                "lease",
                "virt-operator",
                "-n",
                NS,
                "-o=jsonpath={.spec.holderIdentity}",
            ],
        )
        .await
        .unwrap_or_default()
    };
    eventually("the operator holds Lease virt-operator", || async {
        (holder().await == "virt-operator-a").then_some(())
    })
    .await;
    // A second replica waits: the lease is renewed by the first.
    let _standby = start_operator(&c, image, "virt-operator-b");

    // The seed's second command.
    let (ok, stdout, stderr) = c.kubectl(&["create", "-f", cr_yaml], None).await;
    assert!(ok, "kubectl create -f kubevirt-cr.yaml: {stdout}{stderr}");
    eventually("the components", || async {
        for (kind, name) in [
            ("deployment", "virt-api"),
            ("deployment", "virt-controller"),
            ("daemonset", "virt-handler"),
            ("service", "virt-api"),
            ("secret", "kubevirt-virt-api-certs"),
            ("secret", "kubevirt-node-agent-token"),
            ("configmap", "kubevirt-ca"),
            ("serviceaccount", "kubevirt-handler"),
        ] {
            get(&c, &["get", kind, name, "-n", NS, "-o", "name"]).await?;
        }
        get(
            &c,
            &["get", "clusterrole", "kubevirt-controller", "-o", "name"],
        )
        .await?;
        get(
            &c,
            &["get", "crd", "virtualmachines.kubevirt.io", "-o", "name"],
        )
        .await
    })
    .await;
    assert_eq!(
        image_of(&c, "deployment", "virt-api").await,
        "127.0.0.1:5000/virt-api:v0.1.0"
    );
    let managed = get(
        &c,
        &["get", "daemonset", "virt-handler", "-n", NS,
            "-o=jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by} {.metadata.annotations.kubevirt\\.io/install-strategy-version}"],
    )
    .await
    .unwrap();
    assert_eq!(managed, "virt-operator v0.1.0");
    wait_kv(&c, "kubevirt", "{.status.phase}", "Deploying").await;
    assert_eq!(
        kv_field(&c, "kubevirt", "{.metadata.finalizers[0]}").await,
        "foregroundDeleteKubeVirt"
    );

    // A component whose image cannot be pulled: Degraded with the kubelet's reason. (No
    // kubelet here either: the test writes the pod's status as one would.)
    let (ok, _, err) = c.kubectl(&["create", "-f", "-"], Some(BROKEN_POD)).await;
    assert!(ok, "{err}");
    let (ok, _, err) = c
        .kubectl(
            &[
                "patch",
                "pod",
                "virt-api-broken",
                "-n",
                NS,
                "--subresource=status",
                "--type=merge",
                "-p",
                PULL_FAILURE,
            ],
            None,
        )
        .await;
    assert!(ok, "{err}");
    wait_kv(
        &c,
        "kubevirt",
        "{.status.conditions[?(@.type==\"Degraded\")].status} {.status.conditions[?(@.type==\"Degraded\")].message}",
        "True An error occurred during deployment: pod kubevirt/virt-api-broken container virt-api: ErrImagePull: 127.0.0.1:5000/virt-api:v0.1.0: not found",
    )
    .await;
    let (ok, _, err) = c
        .kubectl(
            &[
                "delete",
                "pod",
                "virt-api-broken",
                "-n",
                NS,
                "--grace-period=0",
                "--force",
            ],
            None,
        )
        .await;
    assert!(ok, "{err}");

    mark_ready(&c).await;
    wait_for_kv(&c, "condition=Available", "30s").await;
    wait_kv(
        &c,
        "kubevirt",
        "{.status.phase} {.status.observedKubeVirtVersion} {.status.observedKubeVirtRegistry} {.status.targetKubeVirtVersion} {.status.operatorVersion}",
        "Deployed v0.1.0 127.0.0.1:5000 v0.1.0 v0.1.0",
    )
    .await;
    let generations = kv_field(
        &c,
        "kubevirt",
        "{range .status.generations[*]}{.resource}/{.name}={.lastGeneration} {end}",
    )
    .await;
    for w in [
        "deployments/virt-api=",
        "deployments/virt-controller=",
        "daemonsets/virt-handler=",
    ] {
        assert!(generations.contains(w), "{generations}");
    }
    let reason = kv_field(
        &c,
        "kubevirt",
        "{.status.conditions[?(@.type==\"Available\")].reason}",
    )
    .await;
    assert_eq!(reason, "AllComponentsReady");

    // A new tag rolls every component; the CR is Deploying until they report the new template.
    patch_kv(&c, "kubevirt", r#"{"spec":{"imageTag":"v0.2.0"}}"#).await;
    eventually("the new images", || async {
        let api = image_of(&c, "deployment", "virt-api").await;
        let handler = image_of(&c, "daemonset", "virt-handler").await;
        (api == "127.0.0.1:5000/virt-api:v0.2.0" && handler == "127.0.0.1:5000/virt-handler:v0.2.0")
            .then_some(())
    })
    .await;
    wait_kv(&c, "kubevirt", "{.status.phase}", "Deploying").await;
    mark_ready(&c).await;
    wait_kv(
        &c,
        "kubevirt",
        "{.status.phase} {.status.observedKubeVirtVersion}",
        "Deployed v0.2.0",
    )
    .await;

    // A malformed configuration changes nothing and says where it is wrong.
    patch_kv(&c, "kubevirt", r#"{"spec":{"imageTag":"v0.3.0","configuration":{"developerConfiguration":{"featureGates":["Snapshot","Snapshot"]}}}}"#).await;
    wait_kv(
        &c,
        "kubevirt",
        "{.status.conditions[?(@.type==\"Degraded\")].status} {.status.conditions[?(@.type==\"Degraded\")].message}",
        "True An error occurred during deployment: spec.configuration.developerConfiguration.featureGates[1]: feature gate \"Snapshot\" is listed twice",
    )
    .await;
    assert_eq!(
        image_of(&c, "deployment", "virt-api").await,
        "127.0.0.1:5000/virt-api:v0.2.0"
    );
    patch_kv(&c, "kubevirt", r#"{"spec":{"imageTag":"v0.2.0","configuration":{"developerConfiguration":{"featureGates":["Snapshot"]}}}}"#).await;
    wait_for_kv(&c, "condition=Degraded=False", "30s").await;
    assert_eq!(
        kv_field(&c, "kubevirt", "{.status.phase}").await,
        "Deployed"
    );
    assert_eq!(
        holder().await,
        "virt-operator-a",
        "the lease stayed with the first replica"
    );

    // A second CR is left alone.
    let second = std::fs::read_to_string(cr_yaml)
        .unwrap()
        .replace("name: kubevirt\n", "name: kubevirt-2\n");
    let (ok, _, err) = c.kubectl(&["create", "-f", "-"], Some(&second)).await;
    assert!(ok, "{err}");
    wait_kv(
        &c,
        "kubevirt-2",
        "{.status.conditions[?(@.type==\"Synchronized\")].reason}: {.status.conditions[?(@.type==\"Synchronized\")].message}",
        "ExistingDeployment: There is an active KubeVirt deployment",
    )
    .await;
    assert_eq!(
        kv_field(&c, "kubevirt-2", "{.metadata.finalizers}").await,
        ""
    );
    let (ok, _, err) = c
        .kubectl(&["delete", "kv", "kubevirt-2", "-n", NS], None)
        .await;
    assert!(ok, "{err}");

    // Deleting the CR is held while a VM exists (the default uninstallStrategy is
    // BlockUninstallIfWorkloadsExist).
    let (ok, _, err) = c.kubectl(&["create", "-f", "-"], Some(VM)).await;
    assert!(ok, "{err}");
    let (ok, _, err) = c
        .kubectl(
            &["delete", "kv", "kubevirt", "-n", NS, "--wait=false"],
            None,
        )
        .await;
    assert!(ok, "{err}");
    wait_kv(
        &c,
        "kubevirt",
        "{.status.phase}: {.status.conditions[?(@.type==\"Synchronized\")].message}",
        "Deleting: An error occurred during deletion: there are still Virtual Machines present",
    )
    .await;
    assert!(
        get(
            &c,
            &["get", "deployment", "virt-api", "-n", NS, "-o", "name"]
        )
        .await
        .is_some()
    );
    assert!(
        get(
            &c,
            &["get", "crd", "virtualmachines.kubevirt.io", "-o", "name"]
        )
        .await
        .is_some()
    );

    let (ok, _, err) = c
        .kubectl(&["delete", "vm", "keeper", "-n", "default"], None)
        .await;
    assert!(ok, "{err}");
    wait_for_kv(&c, "delete", "40s").await;
    for (kind, name, ns) in [
        ("deployment", "virt-api", Some(NS)),
        ("deployment", "virt-controller", Some(NS)),
        ("daemonset", "virt-handler", Some(NS)),
        ("service", "virt-api", Some(NS)),
        ("secret", "kubevirt-ca", Some(NS)),
        ("serviceaccount", "kubevirt-apiserver", Some(NS)),
        ("clusterrole", "kubevirt-controller", None),
        ("clusterrolebinding", "kubevirt-handler", None),
        (
            "rolebinding",
            "kubevirt-apiserver-auth-reader",
            Some("kube-system"),
        ),
        ("crd", "virtualmachines.kubevirt.io", None),
        ("crd", "datavolumes.cdi.kubevirt.io", None),
    ] {
        let mut args = vec!["get", kind, name];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let (ok, _, stderr) = c.kubectl(&args, None).await;
        assert!(
            !ok && stderr.contains("NotFound"),
            "{kind} {name} is left: {stderr}"
        );
    }
    // What kubevirt-operator.yaml created stays: the KubeVirt CRD and the operator.
    assert!(
        get(&c, &["get", "crd", "kubevirts.kubevirt.io", "-o", "name"])
            .await
            .is_some()
    );

    // The leader stopped by SIGTERM gives the lease up; the standby takes it at once instead
    // of waiting for it to expire.
    // SAFETY: kill(2) on the child this test spawned and has not reaped; no memory is involved.
    let r = unsafe { libc::kill(leader.0.id() as i32, libc::SIGTERM) };
    assert_eq!(r, 0);
    let status = leader.0.wait().unwrap();
    assert!(
        status.success(),
        "the leader's exit after SIGTERM: {status}"
    );
    eventually("the standby leads", || async {
        (holder().await == "virt-operator-b").then_some(())
    })
    .await;
}

#[test]
fn a_bad_environment_is_named() {
    let o = Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .arg("operator")
        .env("WATCH_NAMESPACE", NS)
        .env("VIRT_OPERATOR_IMAGE", "127.0.0.1:5000/virt-api:v1")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("VIRT_OPERATOR_IMAGE") && err.contains("not named virt-operator"),
        "{err}"
    );
}
