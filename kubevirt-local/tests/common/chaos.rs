//! The chaos suites' machinery (`chaos.rs` on the embedded default, `chaos_components.rs` on
//! KubeVirt installed by its operator): a seeded random source, the host's processes read from
//! `/proc` (launchers and whether they run their guest, the node's containerd, KubeVirt's
//! components), `kill -9`, background threads (the acknowledged-write writer, the two-guests
//! sampler), and the checks at the end.
//!
//! **What runs a guest.** A launcher process (`kubevirt-launcher serve --namespace NS --name VM`,
//! alive, not a zombie) runs its VM's guest when one of its threads named `vcpu<N>` (kubevirt-vmm
//! names every vCPU thread so) is not parked, i.e. `/proc/PID/task/TID/syscall` does not show it
//! blocked in `futex` (202): it is in the guest (`running`), in `ioctl(KVM_RUN)` with the guest
//! halted, or emulating a device. A migration target still waiting for its stream has no vCPU
//! thread yet; a source ends its vCPU threads before it tells the target to run (a vCPU thread
//! on its way out is runnable, and under load it may wait a while for a CPU: seen as running, it
//! would look like a second guest); neither runs the guest. A paused VM (vCPUs parked on a
//! condition variable, futex) would not count either (nothing here pauses one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kubevirt_testsupport::process_alive;
use serde_json::Value;

/// An environment variable's number, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: a run's only source of randomness, seeded from `CHAOS_SEED`.
pub struct Rng(u64);

impl Rng {
    /// From `CHAOS_SEED`, or the time; the seed is printed with the run's size so a failing run
    /// can be replayed.
    pub fn from_env(suite: &str, rounds: u64, vms: usize) -> Self {
        let seed = env_or(
            "CHAOS_SEED",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
        ) | 1;
        eprintln!("{suite}: CHAOS_SEED={seed} CHAOS_ROUNDS={rounds} CHAOS_VMS={vms}");
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// `items` in a random order.
    pub fn shuffled<T: Copy, const N: usize>(&mut self, mut items: [T; N]) -> [T; N] {
        for i in (1..N).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
        items
    }
}

/// The command line of `pid`, its arguments split.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process's pid.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `flag` in `args`.
pub fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

/// One live launcher process, as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    pub pid: u32,
    /// Its VMI's uid (`--uid`).
    pub uid: String,
    /// Started as a migration target (`--incoming`).
    pub incoming: bool,
    /// Runs its guest (see the module's documentation).
    pub runs_guest: bool,
}

/// Whether `pid` has a `vcpu<N>` thread that is not parked in `futex`.
pub fn runs_guest(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let vcpu = comm
            .trim()
            .strip_prefix("vcpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        // Gone between the two reads: that thread no longer runs anything.
        let syscall = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
        vcpu && !syscall.is_empty() && syscall.split_whitespace().next() != Some("202")
    })
}

/// The live `kubevirt-launcher serve` processes of namespace `ns`, by VM (VMI) name.
pub fn launchers(ns: &str) -> BTreeMap<String, Vec<Launcher>> {
    let mut out: BTreeMap<String, Vec<Launcher>> = BTreeMap::new();
    for pid in pids() {
        let args = cmdline(pid);
        let is_launcher = args
            .first()
            .is_some_and(|a| a.ends_with("kubevirt-launcher"))
            && args.get(1).is_some_and(|a| a == "serve");
        if !is_launcher || flag(&args, "--namespace") != Some(ns) {
            continue;
        }
        if let Some(name) = flag(&args, "--name")
            && process_alive(pid)
        {
            out.entry(name.to_string()).or_default().push(Launcher {
                pid,
                uid: flag(&args, "--uid").unwrap_or_default().to_string(),
                incoming: args.iter().any(|a| a == "--incoming"),
                runs_guest: runs_guest(pid),
            });
        }
    }
    out
}

/// The node's containerd: the process started with the configuration under `data`.
pub fn containerd(data: &Path) -> Option<u32> {
    let config = data.join("node/containerd");
    let config = config.to_string_lossy();
    pids().into_iter().find(|pid| {
        let args = cmdline(*pid);
        args.first().is_some_and(|a| a.ends_with("containerd"))
            && flag(&args, "--config").is_some_and(|c| c.starts_with(config.as_ref()))
            && process_alive(*pid)
    })
}

/// Whether `pid` runs in a pod of node `node` (its cgroup is below the node's).
pub fn in_node(pid: u32, node: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|c| c.contains(&format!("/kubevirt-local/{node}/")))
}

/// The live `kubevirt-controller ROLE` processes in node `node`'s pods (`role`: `node` for
/// virt-handler, `run` for virt-controller, `api`, `operator`).
pub fn component(role: &str, node: &str) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            let args = cmdline(*pid);
            args.first()
                .is_some_and(|a| a.ends_with("kubevirt-controller"))
                && args.get(1).is_some_and(|a| a == role)
                && in_node(*pid, node)
                && process_alive(*pid)
        })
        .collect()
}

pub fn kill9(pid: u32) {
    // SAFETY: kill(2) with a pid this test found and a constant signal.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// A thread that runs `step` until told to stop.
pub struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Background {
    pub fn start(every: Duration, mut step: impl FnMut() + Send + 'static) -> Self {
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
    pub fn stop(mut self) {
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
pub fn kubectl(data: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut all = vec!["--request-timeout=10s"];
    all.extend_from_slice(args);
    kubevirt_testsupport::kubectl(&data.join("kubeconfig"), &all, stdin)
}

/// `kubectl get ... -o json`, if it answers.
pub fn json(data: &Path, args: &[&str]) -> Option<Value> {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = kubectl(data, &all, None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The objects of kind `what` in namespace `ns`, if the API answers.
pub fn items(data: &Path, ns: &str, what: &str) -> Option<Vec<Value>> {
    json(data, &["get", what, "-n", ns]).and_then(|v| v["items"].as_array().cloned())
}

/// `examples/vm-demo.yaml` as VM `name` in namespace `ns`, booting `image`.
pub fn vm_yaml(name: &str, ns: &str, image: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("examples/vm-demo.yaml"))
        .expect("examples/vm-demo.yaml")
        .replace("oci:target/demo-image:demo", image)
        .replace(
            "  name: demo\n",
            &format!("  name: {name}\n  namespace: {ns}\n"),
        )
        .replace("hostname: demo-vm", &format!("hostname: {name}"))
}

/// Acknowledged writes: ConfigMaps `write-<n>` created one after the other every 150 ms; those
/// `kubectl` saw created must all be there at the end ([`Writer::lost`]).
pub struct Writer {
    thread: Background,
    acked: Arc<Mutex<Vec<u64>>>,
}

impl Writer {
    pub fn start(data: &Path, ns: &str) -> Self {
        let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (a, w, ns) = (acked.clone(), data.to_path_buf(), ns.to_string());
        let mut next = 0u64;
        let thread = Background::start(Duration::from_millis(150), move || {
            let name = format!("write-{next}");
            let out = kubectl(&w, &["create", "configmap", &name, "-n", &ns], None);
            if out.status.success() {
                a.lock().unwrap().push(next);
            }
            next += 1;
        });
        Writer { thread, acked }
    }

    /// Stops writing; the writes acknowledged.
    pub fn stop(self) -> Vec<u64> {
        self.thread.stop();
        self.acked.lock().unwrap().clone()
    }

    /// The acknowledged writes `data`'s API no longer has.
    pub fn lost(data: &Path, ns: &str, acked: &[u64]) -> Vec<u64> {
        let present: BTreeSet<String> = items(data, ns, "configmaps")
            .expect("ConfigMaps")
            .iter()
            .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        acked
            .iter()
            .copied()
            .filter(|i| !present.contains(&format!("write-{i}")))
            .collect()
    }
}

/// Never two guests of one VM: samples namespace `ns`'s launchers every 50 ms and records every
/// sample in which two of one VM run its guest at once.
pub struct Sampler {
    thread: Background,
    seen: Arc<Mutex<Sampled>>,
}

/// What a [`Sampler`] saw.
#[derive(Debug, Default, Clone)]
pub struct Sampled {
    /// Every sample that saw two guests of one VM.
    pub doubles: Vec<String>,
    /// The launcher processes that ran a guest, by VM.
    pub guests: BTreeMap<String, BTreeSet<u32>>,
    /// The VMI uids of every launcher seen.
    pub uids: BTreeSet<String>,
}

impl Sampled {
    /// How many distinct launcher processes ran a guest.
    pub fn guests_seen(&self) -> usize {
        self.guests.values().map(BTreeSet::len).sum()
    }
}

impl Sampler {
    pub fn start(ns: &str) -> Self {
        let seen: Arc<Mutex<Sampled>> = Arc::default();
        let (s, ns) = (seen.clone(), ns.to_string());
        let thread = Background::start(Duration::from_millis(50), move || {
            for (vm, all) in launchers(&ns) {
                let running: Vec<u32> =
                    all.iter().filter(|l| l.runs_guest).map(|l| l.pid).collect();
                let mut s = s.lock().unwrap();
                if running.len() > 1 {
                    s.doubles
                        .push(format!("{vm}: guests in {running:?} at once ({all:?})"));
                }
                s.uids.extend(all.iter().map(|l| l.uid.clone()));
                s.guests.entry(vm).or_default().extend(running);
            }
        });
        Sampler { thread, seen }
    }

    /// Stops sampling; what it saw.
    pub fn stop(self) -> Sampled {
        self.thread.stop();
        self.seen.lock().unwrap().clone()
    }
}

/// The run directories left under a launcher root (`<root>/*`, and `<root>/active/*` pointer
/// files) whose name is one of `keys` (VMI and migration uids), or every one when `keys` is
/// `None`.
pub fn run_dirs_left(root: &Path, keys: Option<&BTreeSet<String>>) -> Vec<PathBuf> {
    let list = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    list(root.to_path_buf())
        .into_iter()
        .chain(list(root.join("active")))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.as_deref() != Some("active")
                && keys.is_none_or(|k| name.is_some_and(|n| k.contains(&n)))
        })
        .collect()
}

/// Waits up to `secs` for `probe` to succeed; the panic names what it said last.
pub fn until<T>(what: &str, secs: u64, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let start = std::time::Instant::now();
    loop {
        let why = match probe() {
            Ok(v) => return v,
            Err(why) => why,
        };
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}: {why}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
