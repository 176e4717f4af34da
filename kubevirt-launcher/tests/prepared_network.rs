//! The pod network split as in a virt-launcher pod: `kubevirt-launcher pod-network` (the node
//! agent's privileged step) builds the masquerade binding inside a fresh network namespace the
//! test creates, changes nothing on a second run or on invalid input; a `serve` launcher
//! started inside that namespace without CAP_NET_ADMIN takes `start` with
//! networkPrepared=true, attaches to the prepared tap and the demo guest gets its DHCP lease and
//! answers a ping through the NAT. Nothing is left behind on the host.

mod common;

use common::{
    Launcher, Namespaces, control_client, demo_image, demo_vmi, run, serve_command, tempdir,
    veth_pair, vmi_json, wait_for_phase,
};
use kubevirt_launcher_protocol::{Done, ExitStatus, FinalStatus, Phase, Request, StartRequest};
use std::process::Command;

const UID: &str = "0c9e5d1a-prepared-net";
const POD_IP: &str = "10.244.0.7";
const PEER_IP: &str = "10.244.0.1";
const LAUNCHER: &str = env!("CARGO_BIN_EXE_kubevirt-launcher");

/// Output of a command that must succeed.
fn out(args: &[&str]) -> String {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Everything pod-network may change in namespace `ns`: links, addresses, nftables, forwarding.
fn state(ns: &str) -> String {
    [
        out(&["ip", "-n", ns, "-o", "link"]),
        // IPv4 only: an IPv6 link-local address changes by itself (duplicate detection).
        out(&["ip", "-n", ns, "-4", "-o", "addr"]),
        out(&["ip", "netns", "exec", ns, "nft", "list", "ruleset"]),
        out(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-n",
            "net.ipv4.ip_forward",
        ]),
    ]
    .join("\n")
}

/// `kubevirt-launcher pod-network` with the VMI on stdin: exit code and messages.
fn pod_network(netns: &str, vmi: &str) -> (Option<i32>, String) {
    let mut cmd = Command::new(LAUNCHER);
    cmd.args(["pod-network", "--netns", netns, "--tap-owner", "0"])
        .args(["--vmi", "-"]);
    let mut p = Launcher::spawn(cmd);
    p.type_text(vmi);
    let (status, output) = p.wait();
    (status.code(), output)
}

/// A pod namespace whose `eth0` is one end of a veth pair; the other end is in a peer
/// namespace at PEER_IP (the rest of the cluster).
fn pod_with_eth0(pod: &str, peer: &str) {
    veth_pair(pod, peer, POD_IP, Some(PEER_IP));
    run(&["ip", "-n", pod, "route", "add", "default", "via", PEER_IP]);
}

fn net_vmi(name: &str, image: &str) -> String {
    binding_vmi(name, image, "masquerade")
}

fn binding_vmi(name: &str, image: &str, binding: &str) -> String {
    demo_vmi(
        name,
        image,
        "32Mi",
        &format!("interfaces: [{{name: default, {binding}: {{}}}}]"),
        "networks: [{name: default, pod: {}}]",
    )
}

/// The tests here compare the host's namespaces before and after: one at a time.
static HOST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    HOST.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host's links and namespaces this test or the pod network could make, to compare before
/// and after: the launcher's bridge, tap and pod interfaces (`k6t-*`, `tap*`, `eth0`, `peer0`)
/// and anything named with this process's id. Other test binaries run beside this one and make
/// links and namespaces of their own (pod bridges and veths, `cni-*`): those are not ours to
/// compare.
fn host() -> (String, String) {
    let id = std::process::id().to_string();
    let ours = |name: &str| {
        name.starts_with("k6t-")
            || name.starts_with("tap")
            || name == "eth0"
            || name == "peer0"
            || name.contains(&id)
    };
    let links = out(&["ip", "-o", "link"])
        .lines()
        .map(|l| l.split(" link/").next().unwrap_or(l).to_string())
        .filter(|l| {
            // "7: name: <FLAGS> ..." or "7: name@peer: ..."
            let name = l.split(": ").nth(1).unwrap_or_default();
            ours(name.split('@').next().unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join("\n");
    let namespaces = out(&["ip", "netns", "list"])
        .lines()
        .filter(|l| ours(l.split_whitespace().next().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join("\n");
    (links, namespaces)
}

#[test]
fn pod_network_prepares_once_then_changes_nothing_and_refuses_bad_input_untouched() {
    let _one = one_at_a_time();
    let before = host();
    let id = std::process::id();
    let (pod, peer) = (format!("kvprep-{id}"), format!("kvprep-peer-{id}"));
    {
        let _ns = Namespaces::create(&[&pod, &peer]);
        let netns = format!("/run/netns/{pod}");
        let dir = tempdir("prepnet");
        let image = demo_image(&dir);
        let vmi = vmi_json(&net_vmi("prep", &image), UID).to_string();

        // No eth0 yet: refused (exit 3) before anything is made.
        let empty = state(&pod);
        let (code, msg) = pod_network(&netns, &vmi);
        assert_eq!(code, Some(3), "{msg}");
        assert!(msg.contains("--pod-interface eth0"), "{msg}");
        assert_eq!(state(&pod), empty);

        pod_with_eth0(&pod, &peer);
        let fresh = state(&pod);
        // Invalid input: exit 2, nothing changed.
        let bad_port = vmi.to_string().replace("masquerade", "bridge").replace(
            "\"interfaces\":[{",
            "\"interfaces\":[{\"ports\":[{\"port\":80}],",
        );
        let (code, msg) = pod_network(&netns, &bad_port);
        assert_eq!(code, Some(2), "{msg}");
        assert!(msg.contains("interfaces[0].ports"), "{msg}");
        let no_net = vmi_json(
            &demo_vmi("nonet", &image, "16Mi", "autoattachPodInterface: false", ""),
            UID,
        );
        // No pod network: nothing to do, said so, nothing changed.
        let (code, msg) = pod_network(&netns, &no_net.to_string());
        assert_eq!(code, Some(0), "{msg}");
        assert!(msg.contains("no pod network: nothing to prepare"), "{msg}");
        let (code, msg) = pod_network(&netns, "kind: Pod\napiVersion: v1\n");
        assert_eq!(code, Some(2), "{msg}");
        let (code, msg) = pod_network(&netns, "{not yaml");
        assert_eq!(code, Some(2), "{msg}");
        let (code, msg) = pod_network(&format!("/run/netns/missing-{id}"), &vmi);
        assert_eq!(code, Some(3), "{msg}");
        assert!(msg.contains("--netns"), "{msg}");
        assert_eq!(state(&pod), fresh, "invalid input changed the namespace");

        // Prepared: the bridge with the gateway, the persistent tap on it, the NAT.
        let (code, msg) = pod_network(&netns, &vmi);
        assert_eq!(code, Some(0), "{msg}");
        assert!(
            msg.contains("pod network prepared ") && msg.contains(" changes=bridge k6t-eth0"),
            "{msg}"
        );
        let prepared = state(&pod);
        assert!(prepared.contains("10.0.2.1/24"), "{prepared}");
        assert!(prepared.contains("table ip kubevirt_rs_nat"), "{prepared}");
        let tap = out(&["ip", "-n", &pod, "-d", "link", "show", "dev", "tap0"]);
        assert!(tap.contains("master k6t-eth0"), "{tap}");
        assert!(
            tap.contains("tun type tap")
                && tap.contains("vnet_hdr on")
                && tap.contains("persist on"),
            "{tap}"
        );
        // The host's own interfaces were not touched.
        assert_eq!(host().0, before.0);

        // Again: nothing to do, and it says so.
        let (code, msg) = pod_network(&netns, &vmi);
        assert_eq!(code, Some(0), "{msg}");
        assert!(msg.contains("already prepared: nothing changed"), "{msg}");
        assert_eq!(state(&pod), prepared);
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(host(), before, "links or namespaces left behind");
}

fn start(vmi: serde_json::Value) -> Request {
    Request::Start(Box::new(StartRequest {
        vmi,
        network_prepared: true,
        restore_from: None,
    }))
}

/// The capabilities containerd gives a container that is not privileged (its default spec).
const CONTAINER_CAPS: &str = "-all,+chown,+dac_override,+fsetid,+fowner,+mknod,+net_raw,+setgid,+setuid,+setfcap,+setpcap,+net_bind_service,+sys_chroot,+kill,+audit_write";

/// `serve` in namespace `pod` with only a plain container's capabilities (no CAP_NET_ADMIN, no
/// CAP_SYS_ADMIN), as in the virt-launcher pod, which is not privileged.
fn unprivileged_serve(dir: &std::path::Path, name: &str, pod: &str) -> Launcher {
    let bounding = format!("--bounding-set={CONTAINER_CAPS}");
    Launcher::spawn(serve_command(
        dir,
        ("default", name),
        UID,
        &[
            "ip",
            "netns",
            "exec",
            pod,
            "setpriv",
            &bounding,
            "--inh-caps=-all",
            "--",
        ],
    ))
}

/// Whether process `pid` holds CAP_NET_ADMIN (bit 12 of CapEff) or CAP_SYS_ADMIN (bit 21).
fn has_admin_caps(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff");
    u64::from_str_radix(eff.trim(), 16).unwrap() & ((1 << 12) | (1 << 21)) != 0
}

#[test]
fn an_unprivileged_serve_attaches_to_the_prepared_tap_and_the_guest_gets_its_lease() {
    let _one = one_at_a_time();
    let before = host();
    let id = std::process::id();
    let (pod, peer) = (format!("kvsrv-{id}"), format!("kvsrv-peer-{id}"));
    {
        let _ns = Namespaces::create(&[&pod, &peer]);
        pod_with_eth0(&pod, &peer);
        let dir = tempdir("servenet");
        let image = demo_image(&dir);
        let vmi = vmi_json(&net_vmi("served-net", &image), UID);

        let mut launcher = unprivileged_serve(&dir, "served-net", &pod);
        let client = control_client(&dir);
        let waiting = client.status().unwrap();
        assert_eq!(waiting.phase, Phase::Waiting);
        // As the node agent does: the pod's namespace through the launcher's pid.
        let pid = waiting.launcher.expect("identity").pid;
        assert!(
            !has_admin_caps(pid),
            "the launcher kept CAP_NET_ADMIN or CAP_SYS_ADMIN"
        );
        let (code, msg) = pod_network(&format!("/proc/{pid}/ns/net"), &vmi.to_string());
        assert_eq!(code, Some(0), "{msg}");

        client.call::<Done>(&start(vmi)).expect("start");
        let running = wait_for_phase(&client, Phase::Running);
        let log = dir.join("run/console.log");
        let mut console = Launcher::spawn({
            let mut c = Command::new(LAUNCHER);
            c.args(["console-log", "--file", log.to_str().unwrap()]);
            c
        });
        console.expect("eth0: 10.0.2.2/24 gateway 10.0.2.1");
        let guest_ip = &running.guest.interfaces[0].guest_ip;
        assert_eq!(guest_ip.as_deref(), Some("10.0.2.2"), "{running:?}");

        // The rest of the cluster reaches the guest through the pod IP.
        let ping = Command::new("ip")
            .args(["netns", "exec", &peer, "ping", "-c", "2", "-W", "5", POD_IP])
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "ping through the NAT: {}",
            String::from_utf8_lossy(&ping.stdout)
        );

        launcher.signal(libc::SIGTERM);
        let (status, output) = launcher.wait();
        assert_eq!(status.code(), Some(0), "{output}");
        console.signal(libc::SIGTERM);
        assert_eq!(console.wait().0.code(), Some(0));
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(host(), before, "links or namespaces left behind");
}

#[test]
fn a_start_saying_prepared_in_an_unprepared_namespace_fails_naming_pod_network() {
    let _one = one_at_a_time();
    let id = std::process::id();
    let (pod, peer) = (format!("kvunp-{id}"), format!("kvunp-peer-{id}"));
    let _ns = Namespaces::create(&[&pod, &peer]);
    pod_with_eth0(&pod, &peer);
    let dir = tempdir("unprepared");
    let image = demo_image(&dir);
    let mut launcher = unprivileged_serve(&dir, "unprepared", &pod);
    let client = control_client(&dir);
    client
        .call::<Done>(&start(vmi_json(&net_vmi("unprepared", &image), UID)))
        .expect("start");
    let (status, output) = launcher.wait();
    assert_eq!(
        status.code(),
        Some(ExitStatus::LaunchFailed.code().into()),
        "{output}"
    );
    let last = FinalStatus::read(&dir.join("run"))
        .unwrap()
        .expect("final.json");
    let reason = last.reason.unwrap_or_default();
    assert!(reason.contains("kubevirt-launcher pod-network"), "{reason}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_bridge_binding_hands_the_guest_the_pods_address_and_mac() {
    let _one = one_at_a_time();
    let before = host();
    let id = std::process::id();
    let (pod, peer) = (format!("kvbr-{id}"), format!("kvbr-peer-{id}"));
    {
        let _ns = Namespaces::create(&[&pod, &peer]);
        pod_with_eth0(&pod, &peer);
        let pod_mac = out(&["ip", "-n", &pod, "-br", "link", "show", "dev", "eth0"])
            .split_whitespace()
            .nth(2)
            .expect("eth0's MAC")
            .to_string();
        let dir = tempdir("bridgenet");
        let image = demo_image(&dir);
        let vmi = vmi_json(&binding_vmi("bridged", &image, "bridge"), UID);
        let mut launcher = unprivileged_serve(&dir, "bridged", &pod);
        let client = control_client(&dir);
        let pid = client.status().unwrap().launcher.expect("identity").pid;
        let netns = format!("/proc/{pid}/ns/net");

        let (code, msg) = pod_network(&netns, &vmi.to_string());
        assert_eq!(code, Some(0), "{msg}");
        assert!(msg.contains("10.244.0.7/24 taken off eth0"), "{msg}");
        let prepared = state(&pod);
        let eth0 = out(&["ip", "-n", &pod, "-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            eth0.trim().is_empty(),
            "eth0 kept the pod's address: {eth0}"
        );
        let link = out(&["ip", "-n", &pod, "-o", "link", "show", "dev", "eth0"]);
        assert!(link.contains("master k6t-eth0"), "{link}");
        let (code, msg) = pod_network(&netns, &vmi.to_string());
        assert_eq!(code, Some(0), "{msg}");
        assert!(msg.contains("already prepared: nothing changed"), "{msg}");
        assert_eq!(state(&pod), prepared);

        client.call::<Done>(&start(vmi)).expect("start");
        let running = wait_for_phase(&client, Phase::Running);
        let log = dir.join("run/console.log");
        let mut console = Launcher::spawn({
            let mut c = Command::new(LAUNCHER);
            c.args(["console-log", "--file", log.to_str().unwrap()]);
            c
        });
        console.expect(&format!("eth0: {POD_IP}/24 gateway {PEER_IP}"));
        let iface = &running.guest.interfaces[0];
        assert_eq!(
            (
                iface.guest_ip.as_deref(),
                iface.binding.as_str(),
                iface.mac.as_str()
            ),
            (Some(POD_IP), "bridge", pod_mac.as_str()),
            "{running:?}"
        );
        // The guest is the pod on the wire: the peer's ping reaches it, no NAT in between.
        let ping = Command::new("ip")
            .args(["netns", "exec", &peer, "ping", "-c", "2", "-W", "5", POD_IP])
            .output()
            .unwrap();
        assert!(
            ping.status.success(),
            "ping the bridged guest: {}",
            String::from_utf8_lossy(&ping.stdout)
        );
        let neigh = out(&["ip", "-n", &peer, "neigh", "show", POD_IP]);
        assert!(
            neigh.contains(&pod_mac),
            "the guest answered ARP as the pod: {neigh}"
        );

        launcher.signal(libc::SIGTERM);
        let (status, output) = launcher.wait();
        assert_eq!(status.code(), Some(0), "{output}");
        console.signal(libc::SIGTERM);
        assert_eq!(console.wait().0.code(), Some(0));
        let _ = std::fs::remove_dir_all(&dir);
    }
    assert_eq!(host(), before, "links or namespaces left behind");
}
