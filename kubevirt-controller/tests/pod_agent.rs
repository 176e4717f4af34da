//! The VMI controller and the node agent in pods mode with the real `kubevirt-launcher serve`:
//! the controller renders the VMI's virt-launcher pod; the test plays scheduler and kubelet (it
//! binds the pod and runs its `compute` command as the pod's volumes map it, in a network
//! namespace of its own, as a CNI plugin would give the pod); the agent finds the launcher by
//! its socket, prepares the pod network in that namespace (`kubevirt-launcher pod-network`),
//! sends `start` once, and the demo guest boots on real vCPUs and answers HTTP through the pod
//! network. A restarted agent re-adopts the launcher without starting it again; deleting the VMI
//! shuts the guest down and its launcher exits; a launcher killed under a Running VMI fails it
//! and the controller deletes its pod.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Cluster, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubevirt_api::core::v1::VirtualMachineInstance;
use kubevirt_controller::node::{AgentMode, NodeConfig};
use kubevirt_controller::vmi::{CREATED_BY_LABEL, PodConfig};
use kubevirt_testsupport::{Profile, demo_image, demo_vmi, launcher_binary, process_alive};
use serde_json::json;
use tokio::sync::watch;

const NODE: &str = "node1";
const POD_IP: &str = "10.88.0.5";

/// What the pod's network namespace gets from the test's stand-in CNI: `lo` and an `eth0`
/// (one end of a veth pair whose other end stays inside), then the command, with only the
/// capabilities containerd gives a container that is not privileged (no NET_ADMIN, no
/// SYS_ADMIN: the node agent builds the pod network).
const POD_NETNS: &str = "ip link set lo up && ip link add eth0 type veth peer name eth0-peer && ip link set eth0-peer up && ip link set eth0 up && exec setpriv --bounding-set=-all,+chown,+dac_override,+fsetid,+fowner,+mknod,+net_raw,+setgid,+setuid,+setfcap,+setpcap,+net_bind_service,+sys_chroot,+kill,+audit_write --inh-caps=-all -- \"$0\" \"$@\"";
/// A pod network namespace a CNI plugin left without its interface.
const NO_ETH0: &str = "ip link set lo up && exec \"$0\" \"$@\"";

/// The `compute` container of a pod, run as the kubelet would run it: the launcher binary for
/// the image's, each volume's host path for its mount path, in a network namespace of its own.
struct Compute {
    child: Child,
    log: PathBuf,
}

impl Compute {
    fn run(pod: &Pod, launcher: &Path, netns: &str, log: PathBuf) -> Compute {
        let spec = pod.spec.as_ref().expect("a pod spec");
        let compute = spec
            .containers
            .iter()
            .find(|c| c.name == "compute")
            .expect("a compute container");
        let host_of = |volume: &str| {
            let v = spec.volumes.iter().flatten().find(|v| v.name == volume);
            v.and_then(|v| v.host_path.as_ref()).map(|h| h.path.clone())
        };
        let mounts: Vec<(String, String)> = compute
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.clone(), host_of(&m.name).expect("a hostPath")))
            .collect();
        let command = compute.command.clone().expect("a command");
        assert_eq!(command[0], "/usr/bin/kubevirt-launcher");
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| {
                mounts
                    .iter()
                    .find(|(inside, _)| a == inside)
                    .map_or_else(|| a.clone(), |(_, host)| host.clone())
            })
            .collect();
        for (_, host) in &mounts {
            std::fs::create_dir_all(host).unwrap();
        }
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", netns])
            .arg(launcher)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("unshare");
        Compute { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Compute {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a node agent in pods mode until its sender is told to stop.
fn agent(
    c: &Cluster,
    config: &NodeConfig,
    work: &Path,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = watch::channel(false);
    let task = tokio::spawn(kubevirt_controller::node::agent::run(
        c.client.clone(),
        config.clone(),
        AgentMode::Pods {
            working_dir: work.to_path_buf(),
        },
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
        |r| {
            if let Err(e) = r {
                eprintln!("agent: {e}");
            }
        },
    ));
    (tx, task)
}

/// The VMI `name`, if it exists.
async fn observe(vmis: &Api<VirtualMachineInstance>, name: &str) -> Option<VirtualMachineInstance> {
    vmis.get_opt(name).await.ok()?
}

fn phase(v: &VirtualMachineInstance) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The launcher pod the controller made for the VMI with `uid`.
async fn launcher_pod(pods: &Api<Pod>, uid: &str) -> Option<Pod> {
    let listed = pods
        .list(&ListParams::default().labels(&format!("{CREATED_BY_LABEL}={uid}")))
        .await
        .ok()?;
    listed.items.into_iter().next()
}

/// The scheduler's and the kubelet's part: bind the pod to the node and say it runs.
async fn bind_and_run(pods: &Api<Pod>, pod: &Pod) {
    let name = pod.metadata.name.clone().unwrap();
    let binding = json!({"apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name}, "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}});
    pods.create_subresource::<_, serde_json::Value>(
        "binding",
        &name,
        &PostParams::default(),
        &binding,
    )
    .await
    .expect("binding the pod");
    let status =
        json!({"status": {"phase": "Running", "podIP": POD_IP, "podIPs": [{"ip": POD_IP}]}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the pod's status");
}

/// What the guest answers on its HTTP port, reached in the pod's network namespace.
async fn http_get(run_dir: &Path) -> Option<String> {
    let stream = kubevirt_controller::node::guest_port::connect(run_dir, 80)
        .await
        .ok()?;
    let mut stream = stream.into_std().ok()?;
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET /from-the-pod HTTP/1.0\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    (!answer.is_empty()).then_some(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmi_runs_in_its_pod_started_once_by_the_agent_and_ends_with_it() {
    let launcher = tokio::task::spawn_blocking(|| launcher_binary(Profile::Debug))
        .await
        .unwrap();
    let c = Cluster::start(false).await;
    let work = c.dir.join("node");
    let image = demo_image(&work);
    let root = work.join("launchers");
    let pod_config = PodConfig {
        launcher_image: "registry.test/kubevirt-rs/launcher:v1".into(),
        launcher_root: root.clone(),
        image_cache: work.join("images"),
        registry_config_dir: None,
        plain_http_registries: vec![],
        working_dir: work.clone(),
    };
    let node_config = NodeConfig {
        node_name: NODE.into(),
        launcher: launcher.clone(),
        run_root: root.clone(),
        cache_dir: work.join("images"),
        volumes_dir: work.join("volumes"),
        launcher_args: vec![],
        claim_unscheduled: false,
        peers: None,
    };
    let (stop_controller, stopped) = watch::channel(false);
    let controller = tokio::spawn(kubevirt_controller::vmi::controller::run(
        c.client.clone(),
        pod_config,
        async move {
            let mut rx = stopped;
            let _ = rx.wait_for(|s| *s).await;
        },
        |r| {
            if let Err(e) = r {
                eprintln!("vmi controller: {e}");
            }
        },
    ));
    let (stop_agent, first_agent) = agent(&c, &node_config, &work);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");

    // The controller renders the pod; unbound, the VMI is Scheduling.
    let (ok, _, err) = c
        .kubectl(&["apply", "-f", "-"], Some(&demo_vmi("web", &image, true)))
        .await;
    assert!(ok, "kubectl apply: {err}");
    let uid = eventually("the VMI's uid", || async {
        observe(&vmis, "web").await?.metadata.uid
    })
    .await;
    let pod = eventually("the launcher pod", || launcher_pod(&pods, &uid)).await;
    assert!(
        pod.metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("virt-launcher-web-"),
        "{:?}",
        pod.metadata.name
    );
    eventually("a Scheduling VMI", || async {
        (phase(&observe(&vmis, "web").await?) == "Scheduling").then_some(())
    })
    .await;

    // Bound and running, the pod's launcher waits; the agent starts it and the guest runs.
    let compute = Compute::run(&pod, &launcher, POD_NETNS, work.join("compute-web.log"));
    bind_and_run(&pods, &pod).await;
    let running = eventually("a Running VMI with the pod's IP", || async {
        let v = observe(&vmis, "web").await?;
        let s = v.status.clone()?;
        let ip = s.interfaces.as_ref()?.first()?.ip_address.clone()?;
        (phase(&v) == "Running" && ip == POD_IP).then_some(v)
    })
    .await;
    let status = running.status.unwrap();
    assert_eq!(status.node_name.as_deref(), Some(NODE));
    let pod_uid = pod.metadata.uid.clone().unwrap();
    assert_eq!(
        status
            .active_pods
            .unwrap_or_default()
            .get(&pod_uid)
            .map(String::as_str),
        Some(NODE)
    );
    let run_dir = root.join(&uid);
    let answer = eventually("the guest's HTTP answer through the pod network", || {
        http_get(&run_dir)
    })
    .await;
    assert!(answer.contains("web-vm"), "{answer}");

    // The agent restarts: the launcher runs on, is re-adopted, and is never started again.
    stop_agent.send(true).unwrap();
    first_agent.await.unwrap();
    let launcher_pid = compute.child.id();
    assert!(
        process_alive(launcher_pid),
        "the pod's launcher outlives the agent"
    );
    let (stop_agent, second_agent) = agent(&c, &node_config, &work);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = observe(&vmis, "web").await.unwrap();
    assert_eq!(phase(&v), "Running", "{:?}", v.status);
    assert!(
        http_get(&run_dir)
            .await
            .is_some_and(|a| a.contains("web-vm"))
    );
    let log = compute.log();
    assert_eq!(log.matches("start taken").count(), 1, "{log}");

    // A launcher killed under its Running VMI fails it; the controller deletes the pod.
    let (ok, _, err) = c
        .kubectl(
            &["apply", "-f", "-"],
            Some(&demo_vmi("crash", &image, false)),
        )
        .await;
    assert!(ok, "kubectl apply: {err}");
    let crash_uid = eventually("the second VMI's uid", || async {
        observe(&vmis, "crash").await?.metadata.uid
    })
    .await;
    let crash_pod = eventually("its pod", || launcher_pod(&pods, &crash_uid)).await;
    let mut crash = Compute::run(
        &crash_pod,
        &launcher,
        POD_NETNS,
        work.join("compute-crash.log"),
    );
    bind_and_run(&pods, &crash_pod).await;
    eventually("the second VMI Running", || async {
        (phase(&observe(&vmis, "crash").await?) == "Running").then_some(())
    })
    .await;
    crash.child.kill().unwrap();
    crash.child.wait().unwrap();
    let failed = eventually("the second VMI Failed", || async {
        let v = observe(&vmis, "crash").await?;
        (phase(&v) == "Failed").then_some(v)
    })
    .await;
    let reason = failed.status.and_then(|s| s.reason).unwrap_or_default();
    assert!(reason.contains("killed"), "{reason}");
    eventually("its pod deleted", || async {
        let p = pods
            .get_opt(crash_pod.metadata.name.as_deref()?)
            .await
            .ok()?;
        p.is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;

    // Deleting the VMI shuts its guest down: the launcher exits, the VMI and its directory go.
    vmis.delete("web", &DeleteParams::default()).await.unwrap();
    let mut compute = compute;
    let exit = eventually("the launcher's exit", || {
        let exited = compute.child.try_wait().ok().flatten();
        std::future::ready(exited)
    })
    .await;
    assert!(exit.success(), "{exit:?}: {}", compute.log());
    eventually("the VMI gone", || async {
        vmis.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(!run_dir.exists(), "{} is left", run_dir.display());

    stop_agent.send(true).unwrap();
    second_agent.await.unwrap();
    stop_controller.send(true).unwrap();
    controller.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_network_that_cannot_be_prepared_fails_the_vmi_with_why() {
    let launcher = tokio::task::spawn_blocking(|| launcher_binary(Profile::Debug))
        .await
        .unwrap();
    let c = Cluster::start(false).await;
    let work = c.dir.join("node");
    let image = demo_image(&work);
    let root = work.join("launchers");
    let node_config = NodeConfig {
        node_name: NODE.into(),
        launcher: launcher.clone(),
        run_root: root.clone(),
        cache_dir: work.join("images"),
        volumes_dir: work.join("volumes"),
        launcher_args: vec![],
        claim_unscheduled: false,
        peers: None,
    };
    let (stop_agent, agent_task) = agent(&c, &node_config, &work);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(c.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "default");
    // The VMI controller's part, done by hand: the pod rendered, the VMI Scheduled on the node.
    let (ok, _, err) = c
        .kubectl(
            &["apply", "-f", "-"],
            Some(&demo_vmi("nonet", &image, true)),
        )
        .await;
    assert!(ok, "kubectl apply: {err}");
    let v = eventually("the VMI", || observe(&vmis, "nonet")).await;
    let config = PodConfig {
        launcher_image: "registry.test/kubevirt-rs/launcher:v1".into(),
        launcher_root: root.clone(),
        image_cache: work.join("images"),
        registry_config_dir: None,
        plain_http_registries: vec![],
        working_dir: work.clone(),
    };
    let pod = kubevirt_controller::vmi::pod_for(&v, &config, &Default::default()).unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Scheduled", "nodeName": NODE}});
    vmis.patch("nonet", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let mut compute = Compute::run(&pod, &launcher, NO_ETH0, work.join("compute-nonet.log"));
    let failed = eventually("the VMI Failed", || async {
        let v = observe(&vmis, "nonet").await?;
        (phase(&v) == "Failed").then_some(v)
    })
    .await;
    let reason = failed.status.and_then(|s| s.reason).unwrap_or_default();
    assert!(
        reason.starts_with("preparing the pod network failed: a set-up step failed: ")
            && reason.contains("eth0: no such interface"),
        "{reason}"
    );
    // The launcher, never started, is gone with it.
    let exit = eventually("the launcher's exit", || {
        std::future::ready(compute.child.try_wait().ok().flatten())
    })
    .await;
    assert!(!exit.success(), "{exit:?}");
    assert!(!compute.log().contains("start taken"), "{}", compute.log());

    stop_agent.send(true).unwrap();
    agent_task.await.unwrap();
}
