//! The `stats` request: the launcher's resource use from `/proc/self` (each vCPU thread's CPU
//! time — `schedstat`'s nanoseconds on a CPU, else `stat`'s utime + stime in clock ticks —
//! and the resident set) and its devices' counters, for the node agent's metrics.

use super::Target;
use kubevirt_launcher_protocol::{Stats, VcpuStats};
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// CPU nanoseconds last seen of every vCPU thread so far, by vCPU index and thread id: a guest
/// reboot starts new vCPU threads, and the ended ones' time stays counted, so the total never
/// goes down.
static SEEN: Mutex<BTreeMap<u32, BTreeMap<u32, u64>>> = Mutex::new(BTreeMap::new());

/// The stats of `target` now.
pub fn collect(target: &Target) -> Stats {
    let devices = target.machine.device_stats();
    let interface = target
        .info
        .interfaces
        .first()
        .map_or("default", |i| i.name.as_str());
    Stats {
        vcpus: vcpu_seconds(),
        resident_bytes: resident_bytes().unwrap_or(0),
        domain_memory_bytes: target.info.memory_bytes,
        interfaces: devices.interface(interface).into_iter().collect(),
        disks: devices.disks(),
    }
}

/// Each vCPU's seconds on a host CPU, from `/proc/self/task/<tid>/{comm,stat}` of the
/// threads named `vcpu<N>`.
fn vcpu_seconds() -> Vec<VcpuStats> {
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = task.path();
            let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
                continue;
            };
            let Some(id) = vcpu_index(comm.trim()) else {
                continue;
            };
            if let Some(ns) = thread_cpu_nanos(&dir) {
                seen.entry(id).or_default().insert(tid, ns);
            }
        }
    }
    seen.iter()
        .map(|(&id, threads)| VcpuStats {
            id,
            cpu_seconds: threads.values().sum::<u64>() as f64 / 1e9,
        })
        .collect()
}

/// A thread's time on a CPU in nanoseconds: `schedstat`'s first field, else `stat`'s ticks.
fn thread_cpu_nanos(task: &std::path::Path) -> Option<u64> {
    let schedstat = std::fs::read_to_string(task.join("schedstat")).ok();
    if let Some(ns) = schedstat.and_then(|s| s.split_whitespace().next()?.parse().ok()) {
        return Some(ns);
    }
    let ticks = cpu_ticks(&std::fs::read_to_string(task.join("stat")).ok()?)?;
    Some((ticks as f64 * 1e9 / clock_ticks_per_second()) as u64)
}

/// `vcpu3` → 3.
fn vcpu_index(comm: &str) -> Option<u32> {
    comm.strip_prefix("vcpu")?.parse().ok()
}

/// utime + stime (fields 14 and 15) of a `/proc/.../stat` line; the command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value; glibc answers _SC_CLK_TCK from the
    // auxiliary vector without a system call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// The resident set of this process: `/proc/self/statm`'s second field, in pages.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: as above, a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let line = "4242 (vcpu 0) (x)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_ticks(line), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(vcpu_index("vcpu12"), Some(12));
        assert_eq!(vcpu_index("virtio-blk"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        assert!(resident_bytes().unwrap() > 1 << 20);
    }
}
