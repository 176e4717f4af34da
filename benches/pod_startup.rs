//! Pod startup latency on the local node, measured the way upstream Kubernetes measures its
//! pod-startup SLO (SIG-scalability's "pod startup latency": pods with a pre-pulled image,
//! created at a steady rate, the time from each pod's creation until a watch shows it Running;
//! the SLO is P99 ≤ 5 s on a cluster, issue 13's goal for this machine is **P95 ≤ 1 s**), beside
//! containerd's own time for the same work in the same run.
//!
//! Run (root, containerd, runc, the CNI plugins, busybox-static: `scripts/setup.sh`):
//!
//! ```text
//! cargo bench --bench pod_startup -- [PODS] [--interval-ms MS] [--kubelet-only | --cri-only]
//! ```
//!
//! `PODS` defaults to 100, `MS` to 100. One `kubevirt-local up --bare` runs in this process
//! (API server on SQLite, scheduler, kubelet with its private containerd on its own bridge
//! `kvpb0` and pod network 10.198.0.0/16, the node's registry serving a static busybox image
//! the bench builds). After a warm-up pod (which pulls the busybox and pause images, so every
//! measured pod has them), two runs against the same containerd, the peer first (on the fresh
//! runtime; then a pause of [`BETWEEN_RUNS`] and until containerd is quiet, for its removals
//! to settle):
//!
//! - **kubelet**: `PODS` pods (`busybox sleep`, default service account) created through the
//!   API `MS` apart; the bench's own watch stamps each pod's arrival as bound (`nodeName`),
//!   first status from the kubelet (`hostIP`) and `Running` (Kubernetes' timestamps have whole
//!   seconds, so the watch's arrival times are what is measured, as upstream's SLO measurement
//!   does). Then the runtime's own nanosecond timestamps of each pod's sandbox (created) and
//!   container (created, started) split the time into phases; with every pod idle, the CPU of
//!   this process (API server, scheduler, kubelet) and containerd over [`IDLE_WINDOW`] from
//!   `/proc`; then every pod is deleted.
//! - **containerd** (the peer): the same number of pods, the same arrival rate, the same sandbox
//!   and container configuration (the kubelet's own `sandbox_config`/`container_config`, no
//!   volumes) sent straight over CRI: `RunPodSandbox` (with the same CNI network) +
//!   `CreateContainer` + `StartContainer`, timed per pod from the first call's start to the last
//!   call's return. That is the floor a kubelet on this containerd cannot go below.
//!
//! Both are printed with P50/P95/P99/max, the ratio to the 1 s goal and to containerd's own.
//! Set `RUST_LOG=kubevirt_kubelet=debug` to see the kubelet's per-pod timings.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kubevirt_kubelet::cri::{Cri, api as cri, labels};
use kubevirt_kubelet::images::served::ServedImage;
use kubevirt_kubelet::pod::config::{
    Downward, cgroup_parent, container_config, sandbox_config, uid,
};
use kubevirt_local::up::{self, Components, KubeletOptions, RegistryOptions, Started, UpOptions};
use kubevirt_testsupport::tempdir;
use serde_json::json;

#[global_allocator]
static ALLOCATOR: kubevirt_local::allocator::Allocator = kubevirt_local::allocator::Allocator;

mod host_support;

use host_support::{clock_ticks, cpu_ticks, machine_jiffies};

/// Issue 13's goal on this machine: P95 creation → Running.
const GOAL_P95: f64 = 1.0;
const NODE: &str = "podbench";
/// The node whose cgroup tree the peer's pods use (no kubelet runs for it).
const PEER_NODE: &str = "podbench-peer";
const BRIDGE: &str = "kvpb0";
const CIDR: &str = "10.198.0.0/16";
const LABEL: &str = "bench";
const LABEL_VALUE: &str = "pod-startup";
/// How long every pod stays idle while the control plane's CPU time is sampled.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Settling after the last pod is Running, before sampling.
const SETTLE: Duration = Duration::from_secs(3);
/// The pause between the two runs, for the first run's removals to settle.
const BETWEEN_RUNS: Duration = Duration::from_secs(20);
/// How long a run may take to get every pod Running.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn wall_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// P50, P95, P99, max.
fn stats(values: &[f64]) -> Option<[f64; 4]> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some([
        percentile(&v, 0.5),
        percentile(&v, 0.95),
        percentile(&v, 0.99),
        v[v.len() - 1],
    ])
}

fn line(what: &str, values: &[f64]) -> Option<[f64; 4]> {
    let s = stats(values)?;
    println!(
        "  {what:<44} ({:>3}): P50 {:>7.3} s  P95 {:>7.3} s  P99 {:>7.3} s  max {:>7.3} s",
        values.len(),
        s[0],
        s[1],
        s[2],
        s[3]
    );
    Some(s)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A benchmark pod: the busybox image sleeping, nothing else (the service account's token is
/// mounted as on any pod).
fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {LABEL: LABEL_VALUE}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "sleep",
                "image": image,
                "command": ["/bin/busybox", "sleep", "1000000"],
            }],
        },
    }))
    .expect("the benchmark pod")
}

// ---- /proc --------------------------------------------------------------------------------

fn comm_and_argv(pid: u32) -> Option<(String, String)> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
    Some((comm.trim().to_string(), argv))
}

/// This run's containerd and its shims, by pid.
fn runtime_pids(data: &Path) -> (Vec<u32>, Vec<u32>) {
    let needle = data.to_string_lossy().into_owned();
    let (mut containerd, mut shims) = (Vec::new(), Vec::new());
    for pid in std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Some((comm, argv)) = comm_and_argv(pid) else {
            continue;
        };
        if !argv.contains(&needle) {
            continue;
        }
        if comm.starts_with("containerd-shim") {
            shims.push(pid);
        } else if comm == "containerd" {
            containerd.push(pid);
        }
    }
    (containerd, shims)
}

#[derive(Debug, Clone, Default)]
struct Idle {
    window: f64,
    /// Percent of one core: this process (API server, scheduler, kubelet, registry).
    plane: f64,
    containerd: f64,
    shims: f64,
    shim_count: usize,
    /// The whole machine's busy share (100 % = every core).
    machine: f64,
}

async fn sample_idle(data: &Path) -> Idle {
    let me = std::process::id();
    let (containerd, shims) = runtime_pids(data);
    let read = |pids: &[u32]| -> Vec<Option<u64>> { pids.iter().map(|p| cpu_ticks(*p)).collect() };
    let (me0, c0, s0) = (cpu_ticks(me), read(&containerd), read(&shims));
    let (busy0, total0) = machine_jiffies();
    let t0 = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let window = t0.elapsed().as_secs_f64();
    let (busy1, total1) = machine_jiffies();
    let (me1, c1, s1) = (cpu_ticks(me), read(&containerd), read(&shims));
    let pct = |a: &[Option<u64>], b: &[Option<u64>]| -> f64 {
        a.iter()
            .zip(b)
            .filter_map(|(a, b)| Some(b.as_ref()?.saturating_sub(*a.as_ref()?)))
            .sum::<u64>() as f64
            / clock_ticks()
            / window
            * 100.0
    };
    Idle {
        window,
        plane: pct(&[me0], &[me1]),
        containerd: pct(&c0, &c1),
        shims: pct(&s0, &s1),
        shim_count: shims.len(),
        machine: (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64 * 100.0,
    }
}

// ---- the kubelet run ----------------------------------------------------------------------

/// One pod's timeline, in wall-clock nanoseconds (the API server, the kubelet, containerd and
/// this bench share the host's clock).
#[derive(Debug, Clone, Default)]
struct Timeline {
    created: Option<i128>,
    /// The watch first showed `spec.nodeName`.
    bound: Option<i128>,
    /// The watch first showed a status written by the kubelet (`hostIP`).
    kubelet_status: Option<i128>,
    /// The watch first showed `Running`.
    running: Option<i128>,
    /// containerd's `created_at` of the pod's sandbox (RunPodSandbox under way).
    sandbox_created: Option<i128>,
    /// containerd's `created_at` and `started_at` of the container.
    container_created: Option<i128>,
    container_started: Option<i128>,
}

fn secs(from: Option<i128>, to: Option<i128>) -> Option<f64> {
    Some((to? - from?) as f64 / 1e9)
}

#[derive(Debug, Default)]
struct KubeletRun {
    pods: Vec<Timeline>,
    idle: Option<Idle>,
    load_before: String,
    load_after: String,
    /// CPU seconds from the first creation until every pod ran: this process, containerd.
    cpu: (f64, f64),
    error: Option<String>,
}

async fn client_for(kubeconfig: &Path) -> Result<kube::Client, String> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// Waits until no pod of the benchmark is left in the API and no sandbox in the runtime.
async fn wait_gone(pods: &Api<Pod>, cri: &Cri) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let lp = ListParams::default().labels(&format!("{LABEL}={LABEL_VALUE}"));
    loop {
        let left = pods.list(&lp).await.map_err(|e| e.to_string())?.items.len();
        let sandboxes = cri
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .items
            .len();
        if left == 0 && sandboxes == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{left} pods and {sandboxes} sandboxes still there after 180 s"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Creates one pod, waits for it to run, deletes it: both images are pulled afterwards.
async fn warm_up(pods: &Api<Pod>, cri: &Cri, image: &str) -> Result<(), String> {
    pods.create(&PostParams::default(), &pod("warm-up", image))
        .await
        .map_err(|e| format!("creating the warm-up pod: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = pods.get("warm-up").await.map_err(|e| e.to_string())?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref() == Some("Running") {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the warm-up pod is not Running after 120 s: {:?}",
                p.status
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pods.delete("warm-up", &DeleteParams::default())
        .await
        .map_err(|e| e.to_string())?;
    wait_gone(pods, cri).await
}

async fn kubelet_run(
    client: &kube::Client,
    cri: &Cri,
    data: &Path,
    image: &str,
    n: usize,
    interval: Duration,
) -> KubeletRun {
    let mut run = KubeletRun {
        pods: vec![Timeline::default(); n],
        load_before: loadavg(),
        ..Default::default()
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // The watch runs before the first pod exists and stamps every change as it arrives.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cfg = watcher::Config::default().labels(&format!("{LABEL}={LABEL_VALUE}"));
    let watch = tokio::spawn({
        let pods = pods.clone();
        async move {
            let mut stream = watcher(pods, cfg).default_backoff().boxed();
            while let Some(ev) = stream.next().await {
                let p = match ev {
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                    _ => continue,
                };
                let at = wall_ns();
                let name = p.metadata.name.clone().unwrap_or_default();
                let bound = p.spec.as_ref().and_then(|s| s.node_name.clone()).is_some();
                let status = p.status.as_ref();
                let kubelet = status.and_then(|s| s.host_ip.as_ref()).is_some();
                let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
                if tx.send((name, at, bound, kubelet, running)).is_err() {
                    break;
                }
            }
        }
    });
    let index: HashMap<String, usize> = (0..n).map(|i| (format!("startup-{i}"), i)).collect();
    let record = |(name, at, bound, kubelet, running): (String, i128, bool, bool, bool),
                  t: &mut [Timeline]| {
        let Some(&i) = index.get(&name) else { return };
        let t = &mut t[i];
        if bound && t.bound.is_none() {
            t.bound = Some(at);
        }
        if kubelet && t.kubelet_status.is_none() {
            t.kubelet_status = Some(at);
        }
        if running && t.running.is_none() {
            t.running = Some(at);
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu0 = cpu_now(data);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let name = format!("startup-{i}");
        run.pods[i].created = Some(wall_ns());
        if let Err(e) = pods
            .create(&PostParams::default(), &pod(&name, image))
            .await
        {
            run.error = Some(format!("creating {name}: {e}"));
            break;
        }
        while let Ok(ev) = rx.try_recv() {
            record(ev, &mut run.pods);
        }
    }
    let deadline = Instant::now() + RUN_LIMIT;
    while run.error.is_none() && run.pods.iter().any(|t| t.running.is_none()) {
        if Instant::now() > deadline {
            let left = run.pods.iter().filter(|t| t.running.is_none()).count();
            run.error = Some(format!("{left} pods not Running after {RUN_LIMIT:?}"));
            break;
        }
        match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            Ok(Some(ev)) => record(ev, &mut run.pods),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    watch.abort();
    run.cpu = cpu_since(data, cpu0);
    run.load_after = loadavg();
    // The runtime's own timestamps of each pod.
    match pods
        .list(&ListParams::default().labels(&format!("{LABEL}={LABEL_VALUE}")))
        .await
    {
        Ok(list) => {
            for p in list.items {
                let Some(&i) = p.metadata.name.as_ref().and_then(|n| index.get(n)) else {
                    continue;
                };
                let uid = p.metadata.uid.clone().unwrap_or_default();
                if let Err(e) = runtime_times(cri, &uid, &mut run.pods[i]).await {
                    eprintln!("runtime timestamps of pod {i}: {e}");
                }
            }
        }
        Err(e) => eprintln!("listing the pods: {e}"),
    }
    if run.error.is_none() {
        tokio::time::sleep(SETTLE).await;
        run.idle = Some(sample_idle(data).await);
    }
    if let Err(e) = pods
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{LABEL}={LABEL_VALUE}")),
        )
        .await
    {
        run.error.get_or_insert(format!("deleting the pods: {e}"));
    }
    if let Err(e) = wait_gone(&pods, cri).await {
        run.error.get_or_insert(e);
    }
    run
}

async fn runtime_times(cri: &Cri, uid: &str, t: &mut Timeline) -> Result<(), String> {
    let mut rt = cri.runtime.clone();
    let sandboxes = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .items;
    let Some(s) = sandboxes.first() else {
        return Err("no sandbox".into());
    };
    t.sandbox_created = Some(i128::from(s.created_at));
    let containers = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: s.id.clone(),
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .containers;
    let Some(c) = containers.first() else {
        return Err("no container".into());
    };
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: c.id.clone(),
            verbose: false,
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .status
        .ok_or("no container status")?;
    t.container_created = Some(i128::from(status.created_at));
    t.container_started = Some(i128::from(status.started_at));
    Ok(())
}

// ---- the containerd run (the peer) --------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct CriPod {
    /// Seconds: RunPodSandbox, CreateContainer, StartContainer, all three.
    sandbox: f64,
    create: f64,
    start: f64,
    total: f64,
}

#[derive(Debug, Default)]
struct CriRun {
    pods: Vec<CriPod>,
    load_before: String,
    load_after: String,
    /// CPU seconds from the first call until the last pod started: this process, containerd.
    cpu: (f64, f64),
    error: Option<String>,
}

/// CPU ticks so far of this process and of this run's containerd.
fn cpu_now(data: &Path) -> (u64, u64) {
    let (containerd, _) = runtime_pids(data);
    (
        cpu_ticks(std::process::id()).unwrap_or(0),
        containerd.iter().filter_map(|p| cpu_ticks(*p)).sum(),
    )
}

fn cpu_since(data: &Path, (me0, c0): (u64, u64)) -> (f64, f64) {
    let (me1, c1) = cpu_now(data);
    let t = clock_ticks();
    (
        me1.saturating_sub(me0) as f64 / t,
        c1.saturating_sub(c0) as f64 / t,
    )
}

/// Waits (at most a minute) until containerd has used under 5 % of a core over two seconds:
/// the previous run's removals are done.
async fn quiet_runtime(data: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let before = cpu_now(data);
        tokio::time::sleep(Duration::from_secs(2)).await;
        if cpu_since(data, before).1 / 2.0 < 0.05 {
            return;
        }
    }
}

/// The benchmark pod as the kubelet would have it, without the token volume (this path has no
/// API server), with a uid of its own, without the kubelet's label (the kubelet leaves the
/// sandbox alone) and in the cgroup tree of a node of its own: the kubelet kills what runs in
/// the pod cgroups of its node that belong to no pod it knows, as upstream's does.
fn cri_configs(
    i: usize,
    image: &str,
    logs: &Path,
) -> Result<(cri::PodSandboxConfig, cri::ContainerConfig), String> {
    let mut p = pod(&format!("cri-{i}"), image);
    p.metadata.uid = Some(format!("00000000-0000-4000-8000-{i:012}"));
    let mut sandbox = sandbox_config(&p, 0, logs, NODE);
    sandbox.labels.remove(labels::MANAGED_BY);
    if let Some(linux) = sandbox.linux.as_mut() {
        linux.cgroup_parent = cgroup_parent(PEER_NODE, &uid(&p));
    }
    std::fs::create_dir_all(&sandbox.log_directory).map_err(|e| e.to_string())?;
    let spec = p.spec.clone().unwrap_or_default();
    let container = container_config(
        &p,
        &spec.containers[0],
        "spec.containers[0]",
        0,
        &BTreeMap::new(),
        &Downward::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok((sandbox, container))
}

async fn cri_pod(
    cri: Cri,
    sandbox: cri::PodSandboxConfig,
    container: cri::ContainerConfig,
) -> Result<CriPod, String> {
    let mut rt = cri.runtime.clone();
    let t0 = Instant::now();
    let id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let t1 = Instant::now();
    let cid = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(container),
            sandbox_config: Some(sandbox),
        })
        .await
        .map_err(|e| format!("CreateContainer: {}", e.message()))?
        .into_inner()
        .container_id;
    let t2 = Instant::now();
    rt.start_container(cri::StartContainerRequest { container_id: cid })
        .await
        .map_err(|e| format!("StartContainer: {}", e.message()))?;
    let t3 = Instant::now();
    Ok(CriPod {
        sandbox: (t1 - t0).as_secs_f64(),
        create: (t2 - t1).as_secs_f64(),
        start: (t3 - t2).as_secs_f64(),
        total: (t3 - t0).as_secs_f64(),
    })
}

async fn remove_sandbox(cri: &Cri, id: &str) {
    let mut rt = cri.runtime.clone();
    let containers = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: id.to_string(),
                ..Default::default()
            }),
        })
        .await
        .map(|r| r.into_inner().containers)
        .unwrap_or_default();
    for c in containers {
        let _ = rt
            .stop_container(cri::StopContainerRequest {
                container_id: c.id.clone(),
                timeout: 0,
            })
            .await;
        let _ = rt
            .remove_container(cri::RemoveContainerRequest { container_id: c.id })
            .await;
    }
    let _ = rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await;
    let _ = rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await;
}

async fn cri_run(
    cri: &Cri,
    data: &Path,
    image: &str,
    logs: &Path,
    n: usize,
    interval: Duration,
) -> CriRun {
    let mut run = CriRun {
        load_before: loadavg(),
        ..Default::default()
    };
    let cpu0 = cpu_now(data);
    let mut tasks = Vec::new();
    let start = tokio::time::Instant::now();
    for i in 0..n {
        let (sandbox, container) = match cri_configs(i, image, logs) {
            Ok(c) => c,
            Err(e) => {
                run.error = Some(format!("pod {i}'s configuration: {e}"));
                break;
            }
        };
        tokio::time::sleep_until(start + interval * i as u32).await;
        tasks.push(tokio::spawn(cri_pod(cri.clone(), sandbox, container)));
    }
    for t in tasks {
        match t.await {
            Ok(Ok(p)) => run.pods.push(p),
            Ok(Err(e)) => {
                run.error.get_or_insert(e);
            }
            Err(e) => {
                run.error.get_or_insert(e.to_string());
            }
        }
    }
    run.cpu = cpu_since(data, cpu0);
    run.load_after = loadavg();
    // Every sandbox of the peer's, those of pods that failed half way included.
    let sandboxes = cri
        .runtime
        .clone()
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .map(|r| r.into_inner().items)
        .unwrap_or_default();
    let removals = sandboxes
        .iter()
        .filter(|s| {
            s.metadata
                .as_ref()
                .is_some_and(|m| m.name.starts_with("cri-"))
        })
        .map(|s| remove_sandbox(cri, &s.id));
    futures::future::join_all(removals).await;
    kubevirt_kubelet::pod::remove_all_pod_cgroups(PEER_NODE);
    run
}

// ---- main ---------------------------------------------------------------------------------

fn kubelet_options(layout: &Path) -> KubeletOptions {
    KubeletOptions {
        node_name: NODE.into(),
        runtime: kubevirt_kubelet::Runtime::Private {
            binary: PathBuf::from("containerd"),
            config: kubevirt_kubelet::containerd::ContainerdConfig {
                bridge: BRIDGE.into(),
                pod_cidr: CIDR.into(),
                ..Default::default()
            },
        },
        stop_pods_on_exit: true,
        registry: Some(RegistryOptions {
            listen: None,
            busybox: PathBuf::from("/usr/bin/busybox"),
            launcher: None,
            importer: None,
            images: vec![ServedImage {
                name: "bench/busybox".into(),
                tag: "1".into(),
                dir: layout.to_path_buf(),
            }],
            keep_sandbox_image: false,
        }),
    }
}

fn report_kubelet(k: &KubeletRun, interval: Duration) -> Option<f64> {
    println!(
        "\n== kubelet: {} pods created {} ms apart through the API; load average before {}, after {}",
        k.pods.len(),
        interval.as_millis(),
        k.load_before,
        k.load_after
    );
    if let Some(e) = &k.error {
        println!("kubelet: FAILED: {e}");
    }
    let col = |f: &dyn Fn(&Timeline) -> Option<f64>| -> Vec<f64> {
        k.pods.iter().filter_map(f).collect::<Vec<_>>()
    };
    let total = col(&|t| secs(t.created, t.running));
    let s = line("creation -> Running (watch)", &total);
    let per = k.pods.len().max(1) as f64;
    println!(
        "  CPU while they started: this process (API server, scheduler, kubelet) {:.1} s ({:.0} ms a pod), containerd {:.1} s ({:.0} ms a pod)",
        k.cpu.0,
        k.cpu.0 / per * 1e3,
        k.cpu.1,
        k.cpu.1 / per * 1e3
    );
    println!("  phases (from the watch and containerd's own timestamps):");
    line(
        "creation -> bound (scheduler)",
        &col(&|t| secs(t.created, t.bound)),
    );
    line(
        "bound -> sandbox begun (kubelet sees, volumes)",
        &col(&|t| secs(t.bound, t.sandbox_created)),
    );
    line(
        "sandbox begun -> container created",
        &col(&|t| secs(t.sandbox_created, t.container_created)),
    );
    line(
        "container created -> started",
        &col(&|t| secs(t.container_created, t.container_started)),
    );
    line(
        "started -> Running seen (status, watch)",
        &col(&|t| secs(t.container_started, t.running)),
    );
    line(
        "creation -> first kubelet status seen",
        &col(&|t| secs(t.created, t.kubelet_status)),
    );
    if let Some(i) = &k.idle {
        println!(
            "  idle, {:.1} s with {} pods Running: this process (API server, scheduler, kubelet) {:.2} % of a core, containerd {:.2} %, {} shims {:.2} % ({:.3} % each); whole machine busy {:.1} % of {} cores",
            i.window,
            total.len(),
            i.plane,
            i.containerd,
            i.shim_count,
            i.shims,
            i.shims / i.shim_count.max(1) as f64,
            i.machine,
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
    }
    s.map(|s| s[1])
}

fn report_cri(c: &CriRun, interval: Duration) -> Option<f64> {
    println!(
        "\n== containerd (CRI directly): {} pods {} ms apart; load average before {}, after {}",
        c.pods.len(),
        interval.as_millis(),
        c.load_before,
        c.load_after
    );
    if let Some(e) = &c.error {
        println!("containerd: FAILED: {e}");
    }
    let col = |f: fn(&CriPod) -> f64| c.pods.iter().map(f).collect::<Vec<_>>();
    let s = line(
        "RunPodSandbox + CreateContainer + StartContainer",
        &col(|p| p.total),
    );
    let per = c.pods.len().max(1) as f64;
    println!(
        "  CPU while they started: this process (CRI client) {:.1} s, containerd {:.1} s ({:.0} ms a pod)",
        c.cpu.0,
        c.cpu.1,
        c.cpu.1 / per * 1e3
    );
    line("  RunPodSandbox (incl. CNI)", &col(|p| p.sandbox));
    line("  CreateContainer", &col(|p| p.create));
    line("  StartContainer", &col(|p| p.start));
    s.map(|s| s[1])
}

fn main() {
    // The plane runs in this process: its allocator as `kubevirt-local up` has it.
    kubevirt_local::allocator::configure();
    let mut n = 100usize;
    let mut interval = Duration::from_millis(100);
    let (mut kubelet, mut peer) = (true, true);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--interval-ms" => {
                interval = Duration::from_millis(
                    args.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--interval-ms MS"),
                )
            }
            "--kubelet-only" => peer = false,
            "--cri-only" => kubelet = false,
            "--bench" => {}
            other => {
                if let Ok(v) = other.parse() {
                    n = v;
                }
            }
        }
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let dir = tempdir("pod-startup");
    let layout = dir.join("busybox-layout");
    kubevirt_kubelet::images::node::busybox_image(
        "bench/busybox",
        "1",
        Path::new(kubevirt_kubelet::images::node::STATIC_BUSYBOX),
        &[],
    )
    .expect("the busybox image")
    .write_layout(&layout)
    .expect("its layout");
    let data = dir.join("data");
    println!(
        "pod_startup: {n} pods per run, {} ms apart; load average at start {}",
        interval.as_millis(),
        loadavg()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Started>();
    let opts = UpOptions {
        data_dir: data.clone(),
        listen: "127.0.0.1:0".parse().expect("an address"),
        watch_history: kubevirt_local::storage::DEFAULT_HISTORY,
        node: None,
        ready_file: None,
        kubelet: Some(kubelet_options(&layout)),
        inflight: Default::default(),
    };
    let system = rt.spawn(up::run_with(
        opts,
        Components::Bare,
        async {
            let _ = stopped.await;
        },
        move |s| {
            let _ = ready_tx.send(s.clone());
        },
    ));
    let started = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(180), ready_rx).await })
        .ok()
        .and_then(Result::ok)
        .expect("kubevirt-local up ready within 180 s");
    let registry = started
        .registry
        .as_ref()
        .expect("the node's registry")
        .registry
        .clone();
    let image = format!("{registry}/bench/busybox:1");
    let socket = data.join("node/containerd/containerd.sock");
    let logs = dir.join("cri-logs");
    let outcome = rt.block_on(async {
        let client = client_for(&started.kubeconfig).await?;
        let cri = Arc::new(Cri::connect(&socket).await.map_err(|e| e.to_string())?);
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        // The node must be registered before the scheduler can bind anything.
        warm_up(&pods, &cri, &image).await?;
        // The peer first, on the fresh runtime: its numbers are the floor. Between the runs
        // containerd finishes removing the first run's pods.
        let c = if peer {
            Some(cri_run(&cri, &data, &image, &logs, n, interval).await)
        } else {
            None
        };
        if peer && kubelet {
            tokio::time::sleep(BETWEEN_RUNS).await;
            quiet_runtime(&data).await;
        }
        let k = if kubelet {
            Some(kubelet_run(&client, &cri, &data, &image, n, interval).await)
        } else {
            None
        };
        Ok::<_, String>((k, c))
    });
    let _ = stop.send(());
    match rt.block_on(async { tokio::time::timeout(Duration::from_secs(300), system).await }) {
        Ok(Ok(Ok(()))) => {}
        other => eprintln!("up did not stop cleanly: {other:?}"),
    }
    rt.shutdown_timeout(Duration::from_secs(10));
    let (k, c) = outcome.unwrap_or_else(|e| panic!("pod_startup failed: {e}"));
    let c95 = c.as_ref().and_then(|c| report_cri(c, interval));
    let k95 = k.as_ref().and_then(|k| report_kubelet(k, interval));
    println!();
    if let Some(k95) = k95 {
        println!(
            "kubelet P95 creation -> Running {k95:.3} s = {:.2}x the {GOAL_P95} s goal",
            k95 / GOAL_P95
        );
    }
    if let (Some(k95), Some(c95)) = (k95, c95) {
        println!(
            "kubelet P95 / containerd's own P95 ({c95:.3} s): {:.2}x",
            k95 / c95
        );
    }
    let failed = k.as_ref().is_some_and(|k| k.error.is_some())
        || c.as_ref().is_some_and(|c| c.error.is_some());
    assert!(!failed, "a run failed (see above)");
}
