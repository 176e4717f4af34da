//! The pod network end to end: the launcher runs in a "pod" network namespace the test creates
//! (with `--pod-network`), a "peer" namespace plays the rest of the cluster across a veth pair.
//! The demo guest takes its address from the launcher's DHCP server over virtio-net and a tap;
//! the peer pings the pod address and the masquerade NAT delivers the echo to the guest, which
//! answers (ARP included); a TCP connection to the pod reaches the guest's address and port,
//! seen on the tap at the packet level and refused by the guest. The host's own interfaces are
//! never touched.

mod common;

use common::{Launcher, Namespaces, demo_image, demo_vmi, in_ns, run_command, tempdir, veth_pair};
use kubevirt_vmm::testguest::netns::PacketSocket;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

const POD_IP: &str = "10.244.0.5";
const PEER_IP: &str = "10.244.0.1";
const GUEST_MAC: &str = "02:00:00:aa:bb:01";

fn ip_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn guest_gets_dhcp_answers_arp_and_ping_through_nat_and_sees_forwarded_connections() {
    let id = std::process::id();
    let (pod, peer) = (format!("kvpod-{id}"), format!("kvpeer-{id}"));
    let _ns = Namespaces::create(&[&pod, &peer]);
    veth_pair(&pod, &peer, POD_IP, Some(PEER_IP));

    let dir = tempdir("podnet");
    let image = demo_image(&dir);
    let vmi = demo_vmi(
        "netdemo",
        &image,
        "32Mi",
        &format!("interfaces: [{{name: default, masquerade: {{}}, macAddress: \"{GUEST_MAC}\"}}]"),
        "networks: [{name: default, pod: {}}]",
    );
    let mut cmd = run_command(&dir, &vmi, &["ip", "netns", "exec", &pod]);
    cmd.arg("--pod-network");
    let mut launcher = Launcher::spawn(cmd);
    launcher.expect(&format!("eth0: virtio-net, mac {GUEST_MAC}"));
    launcher.expect("eth0: 10.0.2.2/24 gateway 10.0.2.1");

    // Packets on the guest's tap, from inside the pod namespace.
    let capture = in_ns(&pod, || {
        let tap = PacketSocket::bind("tap0").expect("packet socket on tap0");
        tap.recv_matching(Duration::from_secs(30), |f| {
            // IPv4 TCP SYN to 10.0.2.2:8080.
            f.len() >= 54
                && f[12..14] == [8, 0]
                && f[23] == 6
                && f[30..34] == [10, 0, 2, 2]
                && f[36..38] == 8080u16.to_be_bytes()
                && f[47] & 0x12 == 0x02
        })
        .expect("capture")
    });
    std::thread::sleep(Duration::from_millis(200));

    // Ping the pod from the peer: DNAT to the guest, which must resolve (ARP) and answer.
    let ping = Command::new("ip")
        .args(["netns", "exec", &peer, "ping", "-c", "3", "-W", "5", POD_IP])
        .output()
        .expect("ping (iputils-ping, installed by scripts/setup.sh)");
    assert!(
        ping.status.success(),
        "ping through the NAT failed: {}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    let neigh = ip_in(&pod, &["neigh", "show", "10.0.2.2", "dev", "k6t-eth0"]);
    assert!(
        neigh.contains(GUEST_MAC),
        "the guest answered ARP on the bridge: {neigh}"
    );

    // A TCP connection to the pod arrives at the guest's address and port; the guest refuses it.
    let connect = in_ns(&peer, || {
        std::net::TcpStream::connect_timeout(
            &format!("{POD_IP}:8080").parse().unwrap(),
            Duration::from_secs(10),
        )
    })
    .join()
    .unwrap();
    let err = connect.expect_err("the guest refuses every connection");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    let syn = capture.join().unwrap();
    assert!(syn.is_some(), "no SYN to 10.0.2.2:8080 seen on tap0");
    launcher.expect(&format!("tcp: connection from {PEER_IP}:"));
    launcher.expect(" to port 8080 refused");

    // The control socket reports the guest's interface as upstream's VMI status would.
    let mut control = UnixStream::connect(dir.join("run/control.sock")).expect("control socket");
    control.write_all(b"{\"op\":\"status\"}\n").unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&control), &mut line).unwrap();
    let status: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        status["guest"]["interfaces"][0]["guestIp"], "10.0.2.2",
        "{status}"
    );
    assert_eq!(
        status["guest"]["interfaces"][0]["mac"], GUEST_MAC,
        "{status}"
    );

    // The console socket carries commands: the guest reports its pings, then powers off.
    let sock = dir.join("run/console.sock");
    let mut console = UnixStream::connect(&sock).expect("console socket");
    console.write_all(b"ip\r").unwrap();
    launcher.expect("inet 10.0.2.2/24 gateway 10.0.2.1, echo requests answered: 3");
    // After a guest reboot the fresh VM has the same tap: DHCP again, and pings still pass.
    console.write_all(b"reboot\r").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while launcher
        .expect("eth0: 10.0.2.2/24 gateway 10.0.2.1")
        .matches("eth0: 10.0.2.2/24 gateway 10.0.2.1")
        .count()
        < 2
    {
        if std::time::Instant::now() > deadline {
            panic!("no DHCP after the reboot:\n{}", launcher.output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ping = Command::new("ip")
        .args(["netns", "exec", &peer, "ping", "-c", "1", "-W", "5", POD_IP])
        .output()
        .unwrap();
    assert!(ping.status.success(), "ping after the reboot failed");
    console.write_all(b"poweroff\r").unwrap();
    let (status, out) = launcher.wait();
    assert!(status.success(), "{status}: {out}");
    assert!(
        out.contains("netdemo: the VMI ended phase=Succeeded"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
