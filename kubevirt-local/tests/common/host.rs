//! What a local node may leave on the host beyond its runtime's objects, each check scoped to
//! one node ([`Scope`]): tests run several nodes side by side (see [`super::slot`]), so a check
//! only ever reports what it can tie to this node — its data directory, its node name, its
//! slot's bridge and pod CIDR, its containerd's sandboxes — never another test's objects.
//!
//! - network namespaces (containerd's `/run/netns/cni-*`, which hold each pod's `eth0` and the
//!   taps and bridges the node agent makes for a VM): one holding a process of the node's pods,
//!   or made since the test took its slot and holding an address of the pod CIDR or nothing but
//!   its loopback;
//! - NAT rules and chains (CNI's bridge masquerade and portmap, through iptables-nft) of the
//!   node's sandboxes (their ids from its containerd's log): a rule whose comment names one (CNI
//!   comments each `name: "kubevirt-local" id: "<sandbox id>"`), a chain named for one (CNI
//!   names its chains `CNI-<sha512(network + sandbox id)>`); an address of the pod CIDR does
//!   not say whose a rule is, as every node on the slot had the same;
//! - mounts below the data directory (pods' volumes, containers' root filesystems and `/dev/shm`
//!   of this node's containerd, whose state is below it);
//! - loop devices whose backing file is below the data directory;
//! - pod cgroups of the node in every hierarchy (each v1 controller's and the v2 root);
//! - `kubevirt-launcher-<pid>` directories in the temp directory whose process is gone, made
//!   since the test took its slot;
//! - once the node is stopped: its pod bridge and the pod CIDR's masquerade table, and unix
//!   sockets below the data directory.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use super::chaos::pids;
use super::slot::Network;

/// What belongs to one node.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Its data directory (`up --data-dir`).
    pub data: PathBuf,
    /// Its node name (names its cgroup directory).
    pub node: String,
    /// Its slot's pod network.
    pub net: Network,
    /// When its test took the slot: what was made before is not this node's.
    pub since: SystemTime,
}

/// CNI's network name in the node's containerd configuration.
const CNI_NETWORK: &str = "kubevirt-local";

/// `data` with symbolic links resolved (as `/proc/self/mountinfo` and the loop devices name
/// paths).
fn real(data: &Path) -> PathBuf {
    data.canonicalize().unwrap_or_else(|_| data.to_path_buf())
}

/// Whether `text` holds an IPv4 address of `net`'s pod CIDR (`10.<n>.` not preceded by a digit
/// or a dot).
fn names_pod_address(net: &Network, text: &str) -> bool {
    text.match_indices(&net.prefix).any(|(i, _)| {
        !text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
    })
}

/// Every check that holds while the node runs (see the module's documentation).
pub fn while_running(s: &Scope) -> Vec<String> {
    let mut out = netns_left(&s.net, &s.node, s.since);
    out.extend(nat_left(&s.data));
    out.extend(mounts_left(&s.data));
    out.extend(loop_devices_left(&s.data));
    out.extend(cgroups_left(&s.node));
    out.extend(launcher_temp_dirs_left(s.since));
    out
}

/// The checks that hold once the node is stopped: its pod bridge, its masquerade table and its
/// sockets are gone.
pub fn once_stopped(s: &Scope) -> Vec<String> {
    let mut out = Vec::new();
    if Path::new("/sys/class/net").join(&s.net.bridge).exists() {
        out.push(format!("pod bridge {}", s.net.bridge));
    }
    let table = kubevirt_kubelet::containerd::masquerade::table_name(&s.net.bridge);
    let listed = Command::new("nft")
        .args(["list", "table", "ip", &table])
        .output();
    if listed.is_ok_and(|o| o.status.success()) {
        out.push(format!("nft table ip {table} (the pod CIDR's masquerade)"));
    }
    out.extend(sockets_left(&s.data));
    out
}

/// Whether `up` still runs on `data` (a `kubevirt-local up --data-dir DATA` process).
pub fn up_running(data: &Path) -> bool {
    let want = data.as_os_str().as_encoded_bytes();
    pids().into_iter().any(|pid| {
        let args = cmdline(pid);
        args.first().is_some_and(|a| a.ends_with(b"kubevirt-local"))
            && args.get(1).is_some_and(|a| a == b"up")
            && args
                .windows(2)
                .any(|w| w[0] == b"--data-dir" && w[1] == want)
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|st| st.rsplit(')').next().is_some_and(|r| !r.starts_with(" Z")))
    })
}

fn cmdline(pid: u32) -> Vec<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default()
}

fn run(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The named network namespaces (`/run/netns/*`) of node `node` on `net`, made since `since`
/// when nothing else says whose they are: see the module's documentation.
pub fn netns_left(net: &Network, node: &str, since: SystemTime) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::metadata(e.path()) else {
            continue;
        };
        let addrs = run("ip", &["-n", &name, "-o", "-4", "addr", "show"]);
        let links = run("ip", &["-n", &name, "-o", "link", "show"]);
        let members = pids_in_netns(meta.ino());
        let ours_by_process = members.iter().any(|pid| in_node(*pid, node));
        // An earlier node on this slot had the same addresses: its age says it is not ours.
        let made_since = meta.modified().is_ok_and(|m| m >= since);
        let ours_by_address = made_since && names_pod_address(net, &addrs);
        // Only a loopback and no process: nothing says whose it was but its age.
        let bare = members.is_empty() && links.lines().all(|l| l.contains(": lo:"));
        if ours_by_process || ours_by_address || (bare && made_since) {
            let ifaces: Vec<&str> = links.lines().filter_map(|l| l.split(": ").nth(1)).collect();
            out.push(format!(
                "network namespace {name} (interfaces {ifaces:?}, {} processes)",
                members.len()
            ));
        }
    }
    out
}

/// The processes in the network namespace of inode `ino`.
fn pids_in_netns(ino: u64) -> Vec<u32> {
    let want = format!("net:[{ino}]");
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|l| l.to_string_lossy() == want)
        })
        .collect()
}

/// Whether `pid` runs in a pod of node `node` (its cgroup is below the node's).
fn in_node(pid: u32, node: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|c| c.contains(&format!("/kubevirt-local/{node}/")))
}

/// The sandbox ids this node's containerd made, from its log.
pub fn sandbox_ids(data: &Path) -> BTreeSet<String> {
    let log =
        std::fs::read_to_string(data.join("node/containerd/containerd.log")).unwrap_or_default();
    let mut ids = BTreeSet::new();
    for (i, _) in log.match_indices("sandbox id \\\"") {
        let id: String = log[i + 13..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        if id.len() == 64 {
            ids.insert(id);
        }
    }
    ids
}

/// CNI's name for a chain of sandbox `id` (`utils.MustFormatChainNameWithPrefix`): `CNI-`,
/// `prefix`, then the hex SHA-512 of network name and id, to 28 characters in all.
pub fn cni_chain(id: &str, prefix: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha512::digest(format!("{CNI_NETWORK}{id}"));
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("CNI-{prefix}{}", &hex[..28 - 4 - prefix.len()])
}

/// The host's NAT and filter rules and chains of the node on `data` (`iptables-save`,
/// iptables-nft's view of nftables): see the module's documentation.
pub fn nat_left(data: &Path) -> Vec<String> {
    nat_left_with(&sandbox_ids(data))
}

/// [`nat_left`] with the node's sandbox ids given.
pub fn nat_left_with(ids: &BTreeSet<String>) -> Vec<String> {
    let chains: BTreeSet<String> = ids
        .iter()
        .flat_map(|id| [cni_chain(id, ""), cni_chain(id, "DN-")])
        .collect();
    let mut out = Vec::new();
    let mut table = String::new();
    for line in run("iptables-save", &[]).lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap_or_default();
            if chains.contains(chain) {
                out.push(format!(
                    "{table} chain {chain} of one of this node's sandboxes"
                ));
            }
        } else if line.starts_with("-A ") && ids.iter().any(|id| line.contains(id.as_str())) {
            out.push(format!("{table} rule {line}"));
        }
    }
    out
}

/// The mount points at or below `data` (`/proc/self/mountinfo`).
pub fn mounts_left(data: &Path) -> Vec<String> {
    let data = real(data);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| Path::new(p).starts_with(&data))
        .map(|p| format!("mount {p}"))
        .collect()
}

/// A mountinfo path with its octal escapes (`\040` for a space) decoded.
fn unescape_mount_path(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(o)) => {
                out.push((o[0] - b'0') * 64 + (o[1] - b'0') * 8 + (o[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The loop devices whose backing file is below `data` (`/sys/block/loop*`).
pub fn loop_devices_left(data: &Path) -> Vec<String> {
    let (given, data) = (data, real(data));
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Ok(file) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let file = file.trim_end();
        let path = file.strip_suffix(" (deleted)").unwrap_or(file);
        if Path::new(path).starts_with(&data) || Path::new(path).starts_with(given) {
            out.push(format!(
                "loop device /dev/{} on {file}",
                e.file_name().to_string_lossy()
            ));
        }
    }
    out
}

/// Node `node`'s pod cgroups (`kubevirt-local/<node>/pod*`) in the v2 root and every v1
/// hierarchy.
pub fn cgroups_left(node: &str) -> Vec<String> {
    let rel = Path::new("kubevirt-local").join(node);
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(&rel)];
    if let Ok(entries) = std::fs::read_dir(root) {
        dirs.extend(entries.flatten().map(|e| e.path().join(&rel)));
    }
    let mut out = Vec::new();
    for dir in dirs {
        let Ok(pods) = std::fs::read_dir(&dir) else {
            continue;
        };
        for p in pods.flatten() {
            if p.file_name().to_string_lossy().starts_with("pod")
                && p.file_type().is_ok_and(|t| t.is_dir())
            {
                out.push(format!("cgroup {}", p.path().display()));
            }
        }
    }
    out
}

/// `kubevirt-launcher-<pid>` directories in the temp directory whose process is gone, made
/// since `since`.
pub fn launcher_temp_dirs_left(since: SystemTime) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dead = name
                .strip_prefix("kubevirt-launcher-")
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            dead && e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= since)
        })
        .map(|e| format!("launcher temp dir {}", e.path().display()))
        .collect()
}

/// Unix sockets below `data`.
pub fn sockets_left(data: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![data.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_socket() {
                out.push(format!("socket {}", e.path().display()));
            }
        }
    }
    out
}
