//! The chaos suite (issue 19): VMs running in their virt-launcher pods on `kubevirt-local up`,
//! acknowledged API writes, VM snapshots, DataVolume imports (HTTP, through importer pods) and
//! VM restores going on, and rounds of `kill -9` at random moments
//! of a VM's launcher, of `up` itself (API server, controllers, scheduler, kubelet and node agent
//! in one process; restarted at once, as a supervisor would) and of the node's containerd (the
//! kubelet's supervisor restarts it). Then the invariants:
//! - every API write that was acknowledged is there;
//! - every VM converges to its `runStrategy: Always`: one VMI, Running, its guest answering on
//!   its console, one launcher pod, one launcher process;
//! - no VMI and no snapshot is stuck (every snapshot ends Succeeded or Failed);
//! - every import ends Succeeded with its claim Bound (an importer killed half way starts over),
//!   and every restore completes, its new VM there as the restore's patch made it;
//! - **never two guests of one VM at once**: a sampler looks at the host's processes every
//!   50 ms for the whole run, and two live launchers of one VM at any moment fail the test;
//! - after the VMs are deleted and `up` stops, nothing is left on the host (containers,
//!   sandboxes, veths, pod directories, cgroups, launchers' run directories).
//!
//! `CHAOS_ROUNDS` (default 6), `CHAOS_VMS` (default 2) and `CHAOS_SEED` (default: the time;
//! printed, so a failing run can be replayed) size a run; docs/RELIABILITY.md has longer runs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::node::*;
use kubevirt_testsupport::{
    Profile, controller_binary, demo_image, launcher_binary, process_alive, tempdir,
};
use serde_json::Value;

const NODE: &str = "kv-chaos";
const NS: &str = "chaos";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: the run's only source of randomness, seeded from `CHAOS_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The command line of `pid`, its arguments split.
fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

/// The live `kubevirt-launcher serve` processes of namespace [`NS`], by VM (VMI) name.
fn launchers() -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for pid in pids() {
        let args = cmdline(pid);
        let is_launcher = args
            .first()
            .is_some_and(|a| a.ends_with("kubevirt-launcher"))
            && args.get(1).is_some_and(|a| a == "serve");
        if !is_launcher || flag(&args, "--namespace") != Some(NS) {
            continue;
        }
        if let Some(name) = flag(&args, "--name")
            && process_alive(pid)
        {
            out.entry(name.to_string()).or_default().push(pid);
        }
    }
    out
}

/// The node's containerd: the process started with the configuration under `data`.
fn containerd(data: &Path) -> Option<u32> {
    let config = data.join("node/containerd");
    let config = config.to_string_lossy();
    pids().into_iter().find(|pid| {
        let args = cmdline(*pid);
        args.first().is_some_and(|a| a.ends_with("containerd"))
            && flag(&args, "--config").is_some_and(|c| c.starts_with(config.as_ref()))
            && process_alive(*pid)
    })
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) with a pid this test found and a constant signal.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// A thread that runs `step` until told to stop.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Background {
    fn start(every: Duration, mut step: impl FnMut() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                step();
                std::thread::sleep(every);
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("a background thread panicked");
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `kubectl` with the kubeconfig `up` writes into `data` (rewritten with the new port after a
/// restart), bounded in time.
fn kubectl(data: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut all = vec!["--request-timeout=10s"];
    all.extend_from_slice(args);
    kubevirt_testsupport::kubectl(&data.join("kubeconfig"), &all, stdin)
}

fn json(data: &Path, args: &[&str]) -> Option<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = kubectl(data, &all, None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn items(data: &Path, what: &str) -> Option<Vec<Value>> {
    json(data, &["get", what, "-n", NS]).and_then(|v| v["items"].as_array().cloned())
}

fn vm_yaml(name: &str, image: &str) -> String {
    std::fs::read_to_string(root().join("examples/vm-demo.yaml"))
        .expect("examples/vm-demo.yaml")
        .replace("oci:target/demo-image:demo", image)
        .replace(
            "  name: demo\n",
            &format!("  name: {name}\n  namespace: {NS}\n"),
        )
        .replace("hostname: demo-vm", &format!("hostname: {name}"))
}

/// What a round kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Launcher,
    Up,
    Containerd,
}

const TARGETS: [Target; 3] = [Target::Launcher, Target::Up, Target::Containerd];

/// A DataVolume importing the test's qcow2 over HTTP into a claim of the default class.
fn import_yaml(name: &str, url: &str) -> String {
    format!(
        "apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\n\
         metadata: {{name: {name}, namespace: {NS}}}\n\
         spec: {{source: {{http: {{url: \"{url}\"}}}}, \
         storage: {{resources: {{requests: {{storage: 32Mi}}}}}}}}\n"
    )
}

/// A restore of `snapshot` to a new VM `target`, halted by the restore's patch (a running copy
/// would only add load).
fn restore_yaml(name: &str, snapshot: &str, target: &str) -> String {
    format!(
        "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineRestore\n\
         metadata: {{name: {name}, namespace: {NS}}}\n\
         spec:\n  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {target}}}\n  \
         virtualMachineSnapshotName: {snapshot}\n  patches:\n  \
         - '{{\"op\": \"replace\", \"path\": \"/spec/runStrategy\", \"value\": \"Halted\"}}'\n"
    )
}

/// Whether every import and every restore has ended well: each DataVolume Succeeded with its
/// claim Bound, each restore complete with its VM there and halted.
fn imports_and_restores_done(
    data: &Path,
    imports: &[String],
    restores: &[(String, String)],
) -> Result<(), String> {
    let dvs = items(data, "datavolumes").ok_or("the API does not answer")?;
    let claims = items(data, "pvc").ok_or("the API does not answer")?;
    for name in imports {
        let dv = dvs.iter().find(|d| d["metadata"]["name"] == name.as_str());
        let phase = dv.map(|d| d["status"]["phase"].clone());
        if phase != Some(Value::from("Succeeded")) {
            return Err(format!("DataVolume {name}: {phase:?}"));
        }
        let claim = claims
            .iter()
            .find(|c| c["metadata"]["name"] == name.as_str());
        if claim.map(|c| &c["status"]["phase"]) != Some(&Value::from("Bound")) {
            return Err(format!("DataVolume {name}: claim {claim:?}"));
        }
    }
    let list = items(data, "vmrestore").ok_or("the API does not answer")?;
    let vms = items(data, "vm").ok_or("the API does not answer")?;
    for (name, target) in restores {
        let restore = list.iter().find(|r| r["metadata"]["name"] == name.as_str());
        if restore.map(|r| &r["status"]["complete"]) != Some(&Value::Bool(true)) {
            return Err(format!(
                "restore {name}: {:?}",
                restore.map(|r| &r["status"])
            ));
        }
        let vm = vms
            .iter()
            .find(|v| v["metadata"]["name"] == target.as_str());
        if vm.map(|v| &v["spec"]["runStrategy"]) != Some(&Value::from("Halted")) {
            return Err(format!("restore {name}: VM {target} is {vm:?}"));
        }
    }
    Ok(())
}

/// A snapshot of the run that has succeeded, if any.
fn a_ready_snapshot(data: &Path) -> Option<String> {
    items(data, "vmsnapshot")?
        .iter()
        .rev()
        .find(|s| s["status"]["phase"] == "Succeeded")
        .and_then(|s| s["metadata"]["name"].as_str().map(str::to_string))
}

/// Whether every VM is converged: its one VMI Running and its guest answering, one launcher pod
/// Running, one launcher process.
fn converged(data: &Path, vms: &[String]) -> Result<(), String> {
    let vmis = items(data, "vmi").ok_or("the API does not answer")?;
    let pods = items(data, "pods").ok_or("the API does not answer")?;
    let procs = launchers();
    if vmis.len() != vms.len() {
        return Err(format!("{} VMIs for {} VMs", vmis.len(), vms.len()));
    }
    for vm in vms {
        let vmi = vmis
            .iter()
            .find(|v| v["metadata"]["name"] == vm.as_str())
            .ok_or(format!("{vm}: no VMI"))?;
        if vmi["status"]["phase"] != "Running" {
            return Err(format!("{vm}: VMI {}", vmi["status"]["phase"]));
        }
        let launcher_pods: Vec<&Value> = pods
            .iter()
            .filter(|p| p["metadata"]["labels"]["vm.kubevirt.io/name"] == vm.as_str())
            .collect();
        if launcher_pods.len() != 1 || launcher_pods[0]["status"]["phase"] != "Running" {
            return Err(format!("{vm}: launcher pods {launcher_pods:?}"));
        }
        let n = procs.get(vm).map_or(0, Vec::len);
        if n != 1 {
            return Err(format!("{vm}: {n} launcher processes"));
        }
        let uid = vmi["metadata"]["uid"].as_str().unwrap_or_default();
        let socket = data.join("node/launchers").join(uid).join("console.sock");
        if console_answer(&socket, "hostname", vm).is_none() {
            return Err(format!("{vm}: the guest does not answer on its console"));
        }
    }
    Ok(())
}

#[test]
fn kill_9_at_random_keeps_every_invariant() {
    require_node!();
    let _node = node_slot();
    let rounds = env_or("CHAOS_ROUNDS", 6);
    let vm_count = env_or("CHAOS_VMS", 2) as usize;
    let seed = env_or(
        "CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    ) | 1;
    eprintln!("chaos: CHAOS_SEED={seed} CHAOS_ROUNDS={rounds} CHAOS_VMS={vm_count}");
    let mut rng = Rng(seed);

    let launcher = launcher_binary(Profile::Debug);
    // `up` builds the importer image from the kubevirt-controller next to it.
    controller_binary(Profile::Debug);
    let dir = tempdir("chaos");
    let data = dir.join("data");
    let image = demo_image(&dir);
    // What the imports fetch: a small qcow2 (its content does not matter here).
    let web = dir.join("web");
    std::fs::create_dir_all(&web).unwrap();
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(web.join("disk.qcow2"))
        .arg("16M"));
    let url = format!("http://{}:{}/disk.qcow2", host_ip(), serve_dir(web));
    let args = ["--launcher", launcher.to_str().unwrap()];
    let (mut up, _) = start_up_node(&data, NODE, &args);
    up.ok(&["create", "namespace", NS], None);
    let vms: Vec<String> = (0..vm_count).map(|i| format!("vm-{i}")).collect();
    for vm in &vms {
        up.ok(&["apply", "-f", "-"], Some(&vm_yaml(vm, &image)));
    }
    let started = Instant::now();
    eventually("every VM converged before the chaos", 240, || {
        converged(&data, &vms).ok()
    });
    eprintln!("chaos: {vm_count} VMs up in {:?}", started.elapsed());

    // Never two guests of one VM: every 50 ms, for the whole run.
    let doubles: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen: Arc<Mutex<BTreeMap<String, BTreeSet<u32>>>> = Arc::default();
    let (d, s) = (doubles.clone(), seen.clone());
    let sampler = Background::start(Duration::from_millis(50), move || {
        for (vm, pids) in launchers() {
            if pids.len() > 1 {
                d.lock()
                    .unwrap()
                    .push(format!("{vm}: launchers {pids:?} at once"));
            }
            s.lock().unwrap().entry(vm).or_default().extend(pids);
        }
    });
    // Acknowledged writes: ConfigMaps created one after the other; those `kubectl` saw
    // created must all be there at the end.
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (a, w) = (acked.clone(), data.clone());
    let mut next = 0u64;
    let writer = Background::start(Duration::from_millis(150), move || {
        let name = format!("write-{next}");
        let out = kubectl(&w, &["create", "configmap", &name, "-n", NS], None);
        if out.status.success() {
            a.lock().unwrap().push(next);
        }
        next += 1;
    });
    // Snapshots, imports and restores in flight: one of each every round.
    let mut snapshots = Vec::new();
    let (mut imports, mut restores) = (Vec::new(), Vec::new());

    let mut kills: BTreeMap<Target, u32> = BTreeMap::new();
    let mut order = TARGETS;
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let chaos_start = Instant::now();
    for round in 0..rounds {
        // A random moment: sometimes while the previous round's damage is still being mended.
        std::thread::sleep(Duration::from_millis(rng.below(4000)));
        let vm = &vms[rng.below(vms.len() as u64) as usize];
        let snap = format!("snap-{round}");
        let snapshot = format!(
            "apiVersion: snapshot.kubevirt.io/v1beta1\nkind: VirtualMachineSnapshot\n\
             metadata: {{name: {snap}, namespace: {NS}}}\n\
             spec: {{source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {vm}}}}}\n"
        );
        if kubectl(&data, &["create", "-f", "-"], Some(&snapshot))
            .status
            .success()
        {
            snapshots.push(snap);
        }
        let import = format!("import-{round}");
        if kubectl(
            &data,
            &["create", "-f", "-"],
            Some(&import_yaml(&import, &url)),
        )
        .status
        .success()
        {
            imports.push(import);
        }
        if let Some(ready) = a_ready_snapshot(&data) {
            let (restore, target) = (format!("restore-{round}"), format!("restored-{round}"));
            if kubectl(
                &data,
                &["create", "-f", "-"],
                Some(&restore_yaml(&restore, &ready, &target)),
            )
            .status
            .success()
            {
                restores.push((restore, target));
            }
        }
        // Every kind in the first three rounds (in a random order), then any.
        let target = if round < 3 {
            order[round as usize]
        } else {
            TARGETS[rng.below(3) as usize]
        };
        let killed = match target {
            Target::Launcher => launchers()
                .get(vm)
                .and_then(|p| p.first().copied())
                .map(kill9),
            Target::Containerd => containerd(&data).map(kill9),
            Target::Up => {
                up = {
                    let data = up.kill9();
                    start_up_node(&data, NODE, &args).0
                };
                Some(())
            }
        };
        if killed.is_some() {
            *kills.entry(target).or_default() += 1;
        }
        eprintln!(
            "chaos: round {round} at {:?}: kill -9 {target:?} ({vm}): {}",
            chaos_start.elapsed(),
            if killed.is_some() {
                "done"
            } else {
                "nothing to kill"
            }
        );
    }
    writer.stop();

    let mending = Instant::now();
    eventually("every VM converged after the chaos", 300, || {
        converged(&data, &vms).ok()
    });
    let mended = mending.elapsed();
    let phases = eventually("every snapshot ended", 120, || {
        let list = items(&data, "vmsnapshot")?;
        let mut phases: BTreeMap<String, u32> = BTreeMap::new();
        for s in &list {
            let phase = s["status"]["phase"].as_str().unwrap_or("none");
            *phases.entry(phase.to_string()).or_default() += 1;
        }
        let ended = phases.keys().all(|p| p == "Succeeded" || p == "Failed");
        (ended && list.len() == snapshots.len()).then_some(phases)
    });
    eventually("every import and restore ended well", 240, || {
        imports_and_restores_done(&data, &imports, &restores).ok()
    });
    sampler.stop();

    // Every acknowledged write is there.
    let present: BTreeSet<String> = items(&data, "configmaps")
        .expect("ConfigMaps")
        .iter()
        .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|i| !present.contains(&format!("write-{i}")))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let doubles = doubles.lock().unwrap().clone();
    assert!(
        doubles.is_empty(),
        "two guests of one VM at once: {doubles:#?}"
    );
    let launchers_seen: usize = seen.lock().unwrap().values().map(BTreeSet::len).sum();

    // Nothing left once the VMs are gone and `up` stops.
    for vm in vms.iter().chain(restores.iter().map(|(_, target)| target)) {
        up.ok(&["delete", "vm", vm, "-n", NS, "--wait=false"], None);
    }
    for import in &imports {
        up.ok(&["delete", "dv", import, "-n", NS, "--wait=false"], None);
    }
    eventually("the VMIs, their pods and the claims gone", 120, || {
        let vmis = items(&data, "vmi")?;
        let pods = items(&data, "pods")?;
        let claims = items(&data, "pvc")?;
        (vmis.is_empty() && pods.is_empty() && claims.is_empty() && launchers().is_empty())
            .then_some(())
    });
    drop(up);
    assert_nothing_left(&data);
    let run_dirs: Vec<_> = std::fs::read_dir(data.join("node/launchers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        run_dirs.is_empty(),
        "launcher run directories left: {run_dirs:?}"
    );

    eprintln!(
        "chaos: {rounds} rounds, kills {kills:?}, {} writes acknowledged (0 lost), snapshots \
         {phases:?}, {} imports Succeeded, {} restores complete, {launchers_seen} launcher \
         processes seen (never two of one VM at once), converged {mended:?} after the last \
         kill, nothing left on the host",
        acked.len(),
        imports.len(),
        restores.len(),
    );
}

/// The sampler finds a launcher by its command line alone: a stand-in process named and
/// argued like one (`kubevirt-launcher serve --namespace chaos --name <vm>`).
#[test]
fn the_sampler_sees_a_launcher_by_its_command_line() {
    use std::os::unix::process::CommandExt;
    let dir = tempdir("chaos-sampler");
    std::fs::write(dir.join("serve"), "import time\ntime.sleep(30)\n").unwrap();
    let name = format!("stand-in-{}", std::process::id());
    let mut child = Command::new("/usr/bin/python3")
        .arg0(dir.join("kubevirt-launcher"))
        .args(["serve", "--namespace", NS, "--name", &name])
        .current_dir(&dir)
        .spawn()
        .expect("python3");
    let found = eventually("the stand-in seen", 10, || launchers().remove(&name));
    assert_eq!(found, [child.id()]);
    kill9(child.id());
    let _ = child.wait();
    assert!(
        !launchers().contains_key(&name),
        "a reaped process is not a launcher"
    );
}
