//! The node tests' leak checks ([`common::host`]) can fail: each test plants one kind of object
//! the way a node would leave it (a network namespace, a NAT chain and rule, a mount, a loop
//! device, a pod cgroup, a socket, a launcher temp directory, a pod bridge), sees the check
//! report it, and removes it — also when the test fails (every object is held by a guard). A
//! check must also stay quiet about what is not its node's. Needs root; pod networks of slots
//! 51-54 (`10.251-254.*`, `kvt51-54`), which no node test uses (at most 50 slots).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::host;
use common::slot::Network;
use kubevirt_testsupport::tempdir;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root");
    }
    root
}

/// Runs `program args` (a set-up step that must work).
fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `undo` (a command line) when dropped: the planted object goes even if the test fails.
struct Undo(Vec<Vec<String>>);

impl Undo {
    fn new() -> Self {
        Undo(Vec::new())
    }
    fn then(&mut self, program: &str, args: &[&str]) {
        let mut all = vec![program.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        self.0.push(all);
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        for cmd in self.0.iter().rev() {
            let _ = Command::new(&cmd[0]).args(&cmd[1..]).output();
        }
    }
}

fn has(found: &[String], what: &str) -> bool {
    found.iter().any(|f| f.contains(what))
}

/// A network namespace made while the test ran is this node's when it holds an address of the
/// pod CIDR or is bare (a loopback, no process); an older one is not.
#[test]
fn a_network_namespace_left_is_reported() {
    if !root() {
        return;
    }
    let net = Network::of(51);
    let name = format!("kvleak-{}", std::process::id());
    let before = SystemTime::now() - Duration::from_secs(2);
    assert!(!has(&host::netns_left(&net, "leak-node", before), &name));
    let mut undo = Undo::new();
    sh("ip", &["netns", "add", &name]);
    undo.then("ip", &["netns", "del", &name]);

    let found = host::netns_left(&net, "leak-node", before);
    assert!(has(&found, &name), "a bare namespace made since: {found:?}");
    let later = SystemTime::now() + Duration::from_secs(60);
    let found = host::netns_left(&net, "leak-node", later);
    assert!(
        !has(&found, &name),
        "a bare namespace made before: {found:?}"
    );

    sh(
        "ip",
        &["-n", &name, "addr", "add", "10.251.0.9/16", "dev", "lo"],
    );
    let found = host::netns_left(&net, "leak-node", before);
    assert!(has(&found, &name), "a pod address in it: {found:?}");
    let found = host::netns_left(&net, "leak-node", later);
    assert!(
        !has(&found, &name),
        "an earlier node's on this slot: {found:?}"
    );
    let other = Network::of(52);
    assert!(!has(&host::netns_left(&other, "leak-node", later), &name));
    drop(undo);
    assert!(!has(&host::netns_left(&net, "leak-node", before), &name));
}

/// CNI's chain of one of the node's sandboxes (named by its id) and a rule whose comment names
/// one are reported; another sandbox's are not.
#[test]
fn a_nat_chain_or_rule_left_is_reported() {
    if !root() {
        return;
    }
    let id = format!("{:064x}", u128::from(std::process::id()) << 64 | 0xfeed);
    let ids = BTreeSet::from([id.clone()]);
    let others = BTreeSet::from([format!("{:064x}", 0xbeef_u128)]);
    let chain = host::cni_chain(&id, "");
    assert_eq!(chain.len(), 28, "{chain}");
    assert!(host::nat_left_with(&ids).is_empty());
    let mut undo = Undo::new();
    sh("iptables", &["-t", "nat", "-N", &chain]);
    undo.then("iptables", &["-t", "nat", "-X", &chain]);
    let found = host::nat_left_with(&ids);
    assert!(has(&found, &format!("chain {chain}")), "{found:?}");
    assert!(host::nat_left_with(&others).is_empty(), "another sandbox's");

    let comment = format!("name: \"kubevirt-local\" id: \"{id}\"");
    sh(
        "iptables",
        &[
            "-t",
            "nat",
            "-A",
            &chain,
            "-d",
            "10.252.0.0/16",
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "ACCEPT",
        ],
    );
    undo.then("iptables", &["-t", "nat", "-F", &chain]);
    let found = host::nat_left_with(&ids);
    assert!(
        has(&found, "rule -A") && has(&found, "10.252.0.0/16"),
        "{found:?}"
    );
    assert!(host::nat_left_with(&others).is_empty(), "another sandbox's");
    drop(undo);
    assert!(host::nat_left_with(&ids).is_empty());
}

/// CNI's chain names are what the bridge plugin makes (`CNI-` and 24 hex digits of SHA-512 of
/// network name and sandbox id), seen on this host for a real sandbox.
#[test]
fn cni_chain_names_follow_the_bridge_plugin() {
    assert_eq!(
        host::cni_chain(
            "a6bf5036cdaa3ae1dcfe5404276f46057453d3e5a94017025e17eb9f27bde02e",
            ""
        ),
        "CNI-b75ac9c9bd38f7731cf46dfd"
    );
    assert!(host::cni_chain("x", "DN-").starts_with("CNI-DN-"));
    assert_eq!(host::cni_chain("x", "DN-").len(), 28);
}

/// The sandbox ids come from containerd's log lines.
#[test]
fn sandbox_ids_are_read_from_containerds_log() {
    let dir = tempdir("leak-ids");
    let log = dir.join("node/containerd/containerd.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let id = "ab".repeat(32);
    std::fs::write(
        &log,
        format!(
            "time=\"x\" level=info msg=\"RunPodSandbox for &PodSandboxMetadata{{Name:p,}} returns sandbox id \\\"{id}\\\"\"\n"
        ),
    )
    .unwrap();
    assert_eq!(host::sandbox_ids(&dir), BTreeSet::from([id]));
}

/// A mount below the data directory, and a loop device backed by a file there, are reported.
#[test]
fn a_mount_or_loop_device_left_is_reported() {
    if !root() {
        return;
    }
    let data = tempdir("leak-mount");
    assert!(host::mounts_left(&data).is_empty());
    assert!(host::loop_devices_left(&data).is_empty());
    let point = data.join("pods/p/volumes/v");
    std::fs::create_dir_all(&point).unwrap();
    let p = point.to_string_lossy().into_owned();
    let mut undo = Undo::new();
    sh("mount", &["-t", "tmpfs", "leak-check", &p]);
    undo.then("umount", &[&p]);
    let found = host::mounts_left(&data);
    assert!(has(&found, &p), "{found:?}");

    let file = data.join("disk.img");
    std::fs::write(&file, vec![0u8; 1 << 20]).unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    undo.then("losetup", &["--detach", &dev]);
    let found = host::loop_devices_left(&data);
    let short = dev.trim_start_matches("/dev/");
    assert!(has(&found, short) && has(&found, "disk.img"), "{found:?}");
    drop(undo);
    assert!(host::mounts_left(&data).is_empty());
    // The kernel detaches a loop device asynchronously.
    for _ in 0..50 {
        if host::loop_devices_left(&data).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{:?}", host::loop_devices_left(&data));
}

/// A pod cgroup of the node in any hierarchy (hugetlb's too) is reported; another node's is not.
#[test]
fn a_pod_cgroup_in_any_hierarchy_is_reported() {
    if !root() {
        return;
    }
    let node = format!("leak-node-{}", std::process::id());
    let hierarchy = ["hugetlb", "pids", "memory", "unified"]
        .into_iter()
        .map(|h| Path::new("/sys/fs/cgroup").join(h))
        .find(|p| p.join("cgroup.procs").exists())
        .expect("a cgroup hierarchy");
    let node_dir = hierarchy.join("kubevirt-local").join(&node);
    let pod = node_dir.join("podleak");
    assert!(host::cgroups_left(&node).is_empty());
    std::fs::create_dir_all(&pod).unwrap();
    let mut undo = Undo::new();
    undo.then("rmdir", &[&node_dir.to_string_lossy()]);
    undo.then("rmdir", &[&pod.to_string_lossy()]);
    let found = host::cgroups_left(&node);
    assert!(has(&found, &pod.to_string_lossy()), "{found:?}");
    assert!(host::cgroups_left(&format!("{node}-other")).is_empty());
    drop(undo);
    assert!(host::cgroups_left(&node).is_empty());
}

/// Once stopped, a socket below the data directory, the pod bridge and its masquerade table are
/// reported.
#[test]
fn a_socket_pod_bridge_or_masquerade_table_left_after_a_stop_is_reported() {
    if !root() {
        return;
    }
    let data = tempdir("leak-stopped");
    let scope = host::Scope {
        data: data.to_path_buf(),
        node: format!("leak-node-{}", std::process::id()),
        net: Network::of(53),
        since: SystemTime::now(),
    };
    assert!(host::once_stopped(&scope).is_empty());
    let sock = data.join("node/kubelet/x.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let found = host::once_stopped(&scope);
    assert!(has(&found, &sock.to_string_lossy()), "{found:?}");
    std::fs::remove_file(&sock).unwrap();

    let mut undo = Undo::new();
    sh("ip", &["link", "add", "kvt53", "type", "bridge"]);
    undo.then("ip", &["link", "del", "kvt53"]);
    let found = host::once_stopped(&scope);
    assert!(has(&found, "pod bridge kvt53"), "{found:?}");
    drop(undo);
    assert!(host::once_stopped(&scope).is_empty());

    use kubevirt_kubelet::containerd::masquerade;
    masquerade::ensure_masquerade("kvt53", "10.253.0.0/24").unwrap();
    let found = host::once_stopped(&scope);
    masquerade::remove_masquerade("kvt53");
    assert!(
        has(&found, "nft table ip kubevirt_local_kvt53"),
        "{found:?}"
    );
    assert!(host::once_stopped(&scope).is_empty());
    assert!(
        !host::up_running(&data),
        "no `up` runs on a fresh directory"
    );
}

/// A `kubevirt-launcher-<pid>` directory of a gone process, made since the test began, is
/// reported; a live process's is not.
#[test]
fn a_launcher_temp_dir_left_is_reported() {
    let since = SystemTime::now() - Duration::from_secs(2);
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dir = std::env::temp_dir().join(format!("kubevirt-launcher-{}", gone.id()));
    let live = std::env::temp_dir().join(format!("kubevirt-launcher-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    struct Gone(Vec<std::path::PathBuf>);
    impl Drop for Gone {
        fn drop(&mut self) {
            for d in &self.0 {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
    let guard = Gone(vec![dir.clone(), live.clone()]);
    let found = host::launcher_temp_dirs_left(since);
    assert!(has(&found, &dir.to_string_lossy()), "{found:?}");
    assert!(!has(&found, &live.to_string_lossy()), "{found:?}");
    drop(guard);
    assert!(!has(
        &host::launcher_temp_dirs_left(since),
        &dir.to_string_lossy()
    ));
}
