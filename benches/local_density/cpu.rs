//! Where the CPU of starting the VMs goes, counted by the kernel rather than timed: a run's
//! wall-clock numbers on a 2-core machine depend on whatever else runs, its CPU seconds much
//! less. The bench process joins a `cpuacct` cgroup of its own, so everything it starts
//! (containerd, the shims, runc, direct launchers) is charged there; the pods' processes are
//! charged to the kubelet's pod cgroups (`cpuacct/kubevirt-local/<node>`), and the control plane
//! (API server, controllers, scheduler, kubelet, node agent: this process) to `/proc/self/stat`.
//! What the machine did beyond those is other work, reported so a reader can tell a quiet run
//! from a contended one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::host_support::{clock_ticks, cpu_ticks, machine_jiffies};

const CPUACCT: &str = "/sys/fs/cgroup/cpuacct";

/// The bench's own `cpuacct` cgroup; the process leaves it (and it is removed) on drop.
pub struct Meter {
    own: Option<PathBuf>,
    pods: PathBuf,
}

/// Cumulative CPU nanoseconds at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    plane: u64,
    /// The bench's cgroup: the plane and everything it started outside pods.
    own: Option<u64>,
    pods: Option<u64>,
    machine_busy: u64,
}

/// CPU used between two samples, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub wall: f64,
    /// This process: API server, controllers, scheduler, kubelet, node agent.
    pub plane: f64,
    /// Started by the plane outside pods: containerd, shims, runc, direct launchers.
    pub runtime: Option<f64>,
    /// The pods' processes (launcher, console log, pause, `runc init`).
    pub pods: Option<f64>,
    /// Everything the machine did besides.
    pub other: Option<f64>,
}

impl Meter {
    /// Moves this process into a fresh cgroup (best effort: without one, the runtime's and
    /// others' shares are not reported). `node` names the kubelet's pod cgroups.
    pub fn join(node: &str) -> Meter {
        let own = PathBuf::from(format!("{CPUACCT}/kv-bench-{}", std::process::id()));
        let joined = std::fs::create_dir_all(&own).and_then(|()| {
            std::fs::write(own.join("cgroup.procs"), std::process::id().to_string())
        });
        if let Err(e) = &joined {
            eprintln!(
                "cpu: no cgroup of its own ({}: {e}); the runtime's CPU is not split out",
                own.display()
            );
        }
        Meter {
            own: joined.is_ok().then_some(own),
            pods: Path::new(CPUACCT).join("kubevirt-local").join(node),
        }
    }

    pub fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            plane: self_ns(),
            own: self.own.as_deref().and_then(usage_ns),
            // Absent until the kubelet makes its first pod cgroup.
            pods: usage_ns(&self.pods).or(Some(0)),
            machine_busy: machine_busy_ns(),
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some(own) = &self.own {
            let _ = std::fs::write(
                Path::new(CPUACCT).join("cgroup.procs"),
                std::process::id().to_string(),
            );
            // Our children may still be in it for a moment; a leftover empty cgroup is harmless.
            let _ = std::fs::remove_dir(own);
        }
    }
}

impl Sample {
    /// What was used from `self` to `later`.
    pub fn until(&self, later: &Sample) -> Split {
        let s = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e9;
        let plane = s(self.plane, later.plane);
        let own = self.own.zip(later.own).map(|(a, b)| s(a, b));
        let pods = self.pods.zip(later.pods).map(|(a, b)| s(a, b));
        let machine = s(self.machine_busy, later.machine_busy);
        Split {
            wall: later.at.duration_since(self.at).as_secs_f64(),
            plane,
            runtime: own.map(|o| (o - plane).max(0.0)),
            pods,
            other: own.zip(pods).map(|(o, p)| (machine - o - p).max(0.0)),
        }
    }
}

impl Split {
    /// Ours: the plane, the runtime and the pods (the plane alone when the rest is unknown).
    pub fn ours(&self) -> f64 {
        self.plane + self.runtime.unwrap_or(0.0) + self.pods.unwrap_or(0.0)
    }
}

/// utime + stime of this process (all threads), in ns.
fn self_ns() -> u64 {
    let ticks = cpu_ticks(std::process::id()).unwrap_or(0);
    (ticks as f64 / clock_ticks() * 1e9) as u64
}

/// The whole machine's busy time, in ns.
fn machine_busy_ns() -> u64 {
    (machine_jiffies().0 as f64 / clock_ticks() * 1e9) as u64
}

fn usage_ns(cgroup: &Path) -> Option<u64> {
    std::fs::read_to_string(cgroup.join("cpuacct.usage"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `perf record -a` over the starts when `DENSITY_PERF=FILE` is set (`perf report -i FILE
/// --sort comm,dso` then shows which processes and binaries took the CPU, short-lived ones
/// such as runc and the CNI plugins included). perf itself is moved out of the bench's cgroup.
pub struct Profile(Option<std::process::Child>);

impl Profile {
    pub fn start() -> Profile {
        let Some(file) = std::env::var_os("DENSITY_PERF") else {
            return Profile(None);
        };
        let child = std::process::Command::new("perf")
            .args(["record", "-a", "-g", "-F", "199", "-o"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match child {
            Ok(c) => {
                let _ = std::fs::write(Path::new(CPUACCT).join("cgroup.procs"), c.id().to_string());
                Profile(Some(c))
            }
            Err(e) => {
                eprintln!("cpu: perf record: {e}");
                Profile(None)
            }
        }
    }

    /// Stops the recording (SIGINT, so perf writes its file) and waits for it.
    pub fn stop(mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }
}
