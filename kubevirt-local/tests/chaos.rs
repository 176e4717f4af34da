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

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::chaos::{
    Rng, Sampler, Writer, containerd, env_or, kill9, kubectl, launchers, run_dirs_left, until,
    vm_yaml,
};
use common::chaos_logs::LogsOnFailure;
use common::node::*;
use kubevirt_testsupport::{Profile, controller_binary, demo_image, launcher_binary, tempdir};
use serde_json::Value;

const NODE: &str = "kv-chaos";
const NS: &str = "chaos";

/// `items` of namespace [`NS`].
fn items(data: &Path, what: &str) -> Option<Vec<Value>> {
    common::chaos::items(data, NS, what)
}

/// One object a clean-up waits for, as the failure names it: kind, name, phase, and what holds
/// its deletion (its deletion timestamp and finalizers).
fn what_is_left(kind: &str, obj: &Value) -> String {
    let meta = &obj["metadata"];
    format!(
        "{kind}/{} phase {} deleting since {} finalizers {}",
        meta["name"].as_str().unwrap_or("?"),
        obj["status"]["phase"].as_str().unwrap_or("none"),
        meta["deletionTimestamp"].as_str().unwrap_or("never"),
        meta["finalizers"],
    )
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
    let procs = launchers(NS);
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
        let procs = procs.get(vm).map_or(&[][..], Vec::as_slice);
        if procs.len() != 1 || !procs[0].runs_guest {
            return Err(format!("{vm}: launcher processes {procs:?}"));
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
    let mut rng = Rng::from_env("chaos", rounds, vm_count);

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
    // Dropped before `up` on a failure: the launchers' and importers' logs are kept.
    let _logs = LogsOnFailure::new(&data, "chaos", &[NS]);
    up.ok(&["create", "namespace", NS], None);
    let vms: Vec<String> = (0..vm_count).map(|i| format!("vm-{i}")).collect();
    for vm in &vms {
        up.ok(&["apply", "-f", "-"], Some(&vm_yaml(vm, NS, &image)));
    }
    let started = Instant::now();
    eventually("every VM converged before the chaos", 240, || {
        converged(&data, &vms).ok()
    });
    eprintln!("chaos: {vm_count} VMs up in {:?}", started.elapsed());

    // Never two guests of one VM: every 50 ms, for the whole run.
    let sampler = Sampler::start(NS);
    // Acknowledged writes: ConfigMaps created one after the other; those `kubectl` saw
    // created must all be there at the end.
    let writer = Writer::start(&data, NS);
    // Snapshots, imports and restores in flight: one of each every round.
    let mut snapshots = Vec::new();
    let (mut imports, mut restores) = (Vec::new(), Vec::new());

    let mut kills: BTreeMap<Target, u32> = BTreeMap::new();
    let order = rng.shuffled(TARGETS);
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
            Target::Launcher => launchers(NS)
                .get(vm)
                .and_then(|p| p.first().map(|l| l.pid))
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
    let acked = writer.stop();

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
    let sampled = sampler.stop();
    let (launchers_seen, doubles) = (sampled.guests_seen(), sampled.doubles);

    // Every acknowledged write is there.
    let lost = Writer::lost(&data, NS, &acked);
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(
        doubles.is_empty(),
        "two guests of one VM at once: {doubles:#?}"
    );

    // Nothing left once the VMs are gone and `up` stops.
    for vm in vms.iter().chain(restores.iter().map(|(_, target)| target)) {
        up.ok(&["delete", "vm", vm, "-n", NS, "--wait=false"], None);
    }
    for import in &imports {
        up.ok(&["delete", "dv", import, "-n", NS, "--wait=false"], None);
    }
    until("the VMIs, their pods and the claims gone", 120, || {
        let mut left = Vec::new();
        for kind in ["vmi", "pods", "pvc"] {
            let list = items(&data, kind).ok_or("the API server does not answer")?;
            left.extend(list.iter().map(|o| what_is_left(kind, o)));
        }
        left.extend(
            launchers(NS)
                .into_iter()
                .map(|(vm, l)| format!("launchers of {vm}: {l:?}")),
        );
        if left.is_empty() {
            Ok(())
        } else {
            Err(left.join("; "))
        }
    });
    drop(up);
    assert_nothing_left(&data);
    let run_dirs = run_dirs_left(&data.join("node/launchers"), None);
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

/// A stand-in launcher: a process named and argued like one (`kubevirt-launcher serve
/// --namespace chaos --name <name>`, `--incoming` too for a migration target), with a thread
/// named `vcpu0` that spins (`run`: a vCPU in its guest), waits on a condition (`park`: a
/// paused vCPU) or none at all (`none`: a target still waiting for its stream, a source that
/// has handed over).
fn stand_in(dir: &Path, name: &str, vcpu: &str, incoming: bool) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    // Written whole under another name, then renamed: a stand-in started just before reads its
    // script as this truncates and rewrites it otherwise, reads nothing and exits at once.
    let script = dir.join(format!("serve.{name}.{vcpu}.{incoming}"));
    std::fs::write(
        &script,
        "import ctypes, os, threading, time\n\
         def vcpu():\n\
         \x20   ctypes.CDLL(None).prctl(15, b'vcpu0', 0, 0, 0)\n\
         \x20   if os.environ['VCPU'] == 'run':\n\
         \x20       while True: pass\n\
         \x20   threading.Event().wait()\n\
         if os.environ['VCPU'] != 'none':\n\
         \x20   threading.Thread(target=vcpu, daemon=True).start()\n\
         time.sleep(30)\n",
    )
    .unwrap();
    std::fs::rename(&script, dir.join("serve")).unwrap();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg0(dir.join("kubevirt-launcher"))
        .args(["serve", "--namespace", NS, "--name", name])
        .env("VCPU", vcpu)
        .current_dir(dir);
    if incoming {
        cmd.args(["--incoming", "unix:/nonexistent"]);
    }
    cmd.spawn().expect("python3")
}

/// Whether `pid` has a thread named `vcpu0` yet.
fn has_vcpu_thread(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| {
        d.flatten().any(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "vcpu0")
        })
    })
}

/// The sampler finds a launcher by its command line alone, and counts it as running its guest
/// exactly when a `vcpu<N>` thread of it is not parked: a spinning vCPU runs the guest, a
/// parked one (a paused VM) and none (a target waiting for its stream) do not; two spinning launchers of one VM are a double; a reaped process is not a launcher.
#[test]
fn the_sampler_sees_a_launcher_by_its_command_line() {
    let dir = tempdir("chaos-sampler");
    let name = format!("stand-in-{}", std::process::id());
    let mut running = stand_in(&dir, &name, "run", false);
    let found = eventually("the running stand-in seen running its guest", 10, || {
        launchers(NS)
            .remove(&name)
            .filter(|l| l.iter().any(|l| l.runs_guest))
    });
    let found: Vec<_> = found.iter().map(|l| (l.pid, l.incoming)).collect();
    assert_eq!(found, [(running.id(), false)]);

    // A target waiting for its stream and a paused VM are not guests.
    let mut target = stand_in(&dir, &name, "none", true);
    let mut parked = stand_in(&dir, &name, "park", false);
    eventually("the parked stand-in's vCPU thread", 10, || {
        has_vcpu_thread(parked.id()).then_some(())
    });
    let sampler = Sampler::start(NS);
    std::thread::sleep(Duration::from_millis(500));
    let all = launchers(NS).remove(&name).unwrap_or_default();
    let by_pid = |pid: u32| all.iter().find(|l| l.pid == pid).cloned();
    assert_eq!(
        by_pid(target.id()).map(|l| (l.incoming, l.runs_guest)),
        Some((true, false)),
        "{all:?}"
    );
    assert_eq!(
        by_pid(parked.id()).map(|l| l.runs_guest),
        Some(false),
        "{all:?}"
    );
    let sampled = sampler.stop();
    assert_eq!(
        (sampled.guests_seen(), sampled.doubles.len()),
        (1, 0),
        "{sampled:?}"
    );

    // A second running one is a double.
    let mut second = stand_in(&dir, &name, "run", false);
    let sampler = Sampler::start(NS);
    eventually("two guests of one VM seen", 10, || {
        launchers(NS)
            .get(&name)
            .is_some_and(|l| l.iter().filter(|l| l.runs_guest).count() == 2)
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(200));
    let sampled = sampler.stop();
    assert!(
        sampled.guests_seen() == 2 && !sampled.doubles.is_empty(),
        "{sampled:?}"
    );

    for child in [&mut running, &mut target, &mut parked, &mut second] {
        kill9(child.id());
        let _ = child.wait();
    }
    assert!(
        !launchers(NS).contains_key(&name),
        "a reaped process is not a launcher"
    );
}
