//! The KubeVirt CR's `spec.configuration` read live by the VMI controller, against a real API
//! server (kubevirt-local in process) and the real kubectl: without a CR a vCPU requests a
//! tenth of a core; `cpuAllocationRatio: 4` makes the next launcher pod request 250m, a change
//! to 2 makes the one after request 500m, and a hostDisk VMI is refused without the HostDisk
//! gate; a configuration the checks refuse changes nothing (the controller logs the
//! field path) and `kubevirt-controller validate` names it.

mod common;

use common::{Cluster, VmiController, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kubevirt_api::core::v1::VirtualMachineInstance;
use serde_json::json;

fn kubevirt(configuration: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: KubeVirt\nmetadata: {{name: kubevirt, namespace: kubevirt}}\nspec:\n  configuration: {configuration}\n"
    )
}

/// The `compute` container's cpu and memory requests of the launcher pod of VMI `name`.
async fn requests(c: &Cluster, name: &str) -> (String, String) {
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    let vmi: VirtualMachineInstance = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}}}
    }))
    .unwrap();
    let made = vmis.create(&PostParams::default(), &vmi).await.unwrap();
    let uid = made.metadata.uid.unwrap();
    eventually("the launcher pod", || async {
        let lp = ListParams::default().labels(&format!("kubevirt.io/created-by={uid}"));
        let pod = pods.list(&lp).await.ok()?.items.into_iter().next()?;
        let compute = pod
            .spec?
            .containers
            .into_iter()
            .find(|c| c.name == "compute")?;
        let r = compute.resources?.requests?;
        Some((r.get("cpu")?.0.clone(), r.get("memory")?.0.clone()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_launcher_pod_follows_the_kubevirt_crs_ratios() {
    let c = Cluster::start(true).await;
    let controller = VmiController::start(&c);

    // No KubeVirt CR: upstream's defaults.
    let (cpu, _) = requests(&c, "a").await;
    assert_eq!(cpu, "100m");

    let (ok, _, err) = c.kubectl(&["create", "namespace", "kubevirt"], None).await;
    assert!(ok, "{err}");
    let apply = |configuration: &'static str| {
        let c = &c;
        async move {
            let (ok, _, err) = c
                .kubectl(&["apply", "-f", "-"], Some(&kubevirt(configuration)))
                .await;
            assert!(ok, "{err}");
        }
    };
    apply("{developerConfiguration: {cpuAllocationRatio: 4}}").await;
    // The watch delivers the CR shortly; each VMI samples the configuration at its pod's
    // creation, so wait until a new VMI's pod shows it.
    let mut n = 0;
    let cpu = eventually("a pod with the CR's ratio", || {
        n += 1;
        let name = format!("b{n}");
        let c = &c;
        async move {
            let (cpu, _) = requests(c, &name).await;
            (cpu == "250m").then_some(cpu)
        }
    })
    .await;
    assert_eq!(cpu, "250m");

    apply("{developerConfiguration: {cpuAllocationRatio: 2}}").await;
    let (cpu, _) = eventually("a pod with the changed ratios", || {
        n += 1;
        let name = format!("c{n}");
        let c = &c;
        async move {
            let r = requests(c, &name).await;
            (r.0 == "500m").then_some(r)
        }
    })
    .await;
    assert_eq!(cpu, "500m");

    // The CR enables no feature gate: a hostDisk volume is refused, in upstream's words.
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");
    let host: VirtualMachineInstance = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "host", "namespace": "default"},
        "spec": {"domain": {"devices": {}, "memory": {"guest": "64Mi"}},
                 "volumes": [{"name": "d", "hostDisk": {"path": "/var/lib/d.img", "type": "Disk"}}]}
    }))
    .unwrap();
    vmis.create(&PostParams::default(), &host).await.unwrap();
    let message = eventually("the hostDisk VMI refused", || async {
        let s = vmis.get("host").await.ok()?.status?;
        s.conditions?
            .into_iter()
            .find(|c| c.type_ == "Synchronized" && c.status == "False")?
            .message
    })
    .await;
    assert!(
        message.contains("spec.volumes[0].hostDisk: HostDisk feature gate is not enabled"),
        "{message}"
    );

    // A bad ratio is refused: the last good configuration stays.
    apply("{developerConfiguration: {cpuAllocationRatio: 0}}").await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(requests(&c, "d").await.0, "500m");
    let bad = c.dir.join("bad-kubevirt.yaml");
    std::fs::write(
        &bad,
        kubevirt("{developerConfiguration: {cpuAllocationRatio: 0}}"),
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kubevirt-controller"))
        .args(["validate", "-f"])
        .arg(&bad)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "KubeVirt/kubevirt: spec.configuration.developerConfiguration.cpuAllocationRatio: must be greater than 0"
        ),
        "{said}"
    );
    let watched = kubevirt_controller::clusterconfig::watch(c.client.clone());
    let state = eventually("the watcher refusing the CR", || async {
        let s = watched.state();
        s.rejected.is_some().then_some(s)
    })
    .await;
    let why = state.rejected.as_deref().unwrap();
    assert!(
        why.starts_with("spec.configuration.developerConfiguration.cpuAllocationRatio"),
        "{why}"
    );
    // A watcher that starts on a bad CR keeps the defaults.
    assert_eq!(state.config.cpu_allocation_ratio, 10);

    controller.stop().await;
}
