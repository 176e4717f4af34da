//! What this machine offers pods: CPUs, memory, ephemeral storage, pod slots and the KubeVirt
//! device resources, read from /proc and the file system.

use std::collections::BTreeMap;
use std::path::Path;

/// The extended resource that puts `/dev/kvm` into a container.
pub const KVM_RESOURCE: &str = "devices.kubevirt.io/kvm";
/// The extended resource that puts `/dev/net/tun` into a container.
pub const TUN_RESOURCE: &str = "devices.kubevirt.io/tun";
/// How many pods one node runs (upstream's default `maxPods`).
pub const MAX_PODS: u32 = 110;
/// How many pods may share one device resource (upstream virt-handler advertises 1000).
const DEVICE_SLOTS: u32 = 1000;

/// The node's total memory in bytes (`MemTotal` in /proc/meminfo).
pub fn memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The file system size under `path` in bytes.
pub fn filesystem_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_blocks.saturating_mul(st.f_frsize))
}

/// `capacity` (and, with nothing reserved, `allocatable`) for a node whose data lives in `dir`.
pub fn capacity(dir: &Path) -> BTreeMap<String, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = BTreeMap::new();
    out.insert("cpu".into(), cpus.to_string());
    out.insert(
        "memory".into(),
        format!("{}Ki", memory_bytes().unwrap_or(0) / 1024),
    );
    out.insert(
        "ephemeral-storage".into(),
        format!("{}Ki", filesystem_bytes(dir).unwrap_or(0) / 1024),
    );
    out.insert("pods".into(), MAX_PODS.to_string());
    let present = |p: &str| Path::new(p).exists();
    let slots = |ok: bool| if ok { DEVICE_SLOTS } else { 0 }.to_string();
    out.insert(KVM_RESOURCE.into(), slots(present("/dev/kvm")));
    out.insert(TUN_RESOURCE.into(), slots(present("/dev/net/tun")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_meminfo("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384 * 1024)
        );
        assert_eq!(parse_meminfo("nothing"), None);
    }

    #[test]
    fn real_capacity() {
        let c = capacity(Path::new("/"));
        assert!(c["cpu"].parse::<u32>().unwrap() >= 1);
        assert_ne!(c["memory"], "0Ki");
        assert_eq!(c["pods"], "110");
        assert_ne!(c["ephemeral-storage"], "0Ki");
    }

    #[test]
    fn filesystem_size() {
        let root = filesystem_bytes(Path::new("/")).expect("the size of /");
        let dir = kubevirt_testsupport::tempdir("capacity");
        assert!(root > 0);
        assert_eq!(filesystem_bytes(&dir.join("not-there")), None);
    }
}
