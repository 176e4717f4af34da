//! The built-in DHCP server against a real client: busybox `udhcpc` in a network namespace the
//! test creates (root), across a veth pair to the server's namespace. The host's own interfaces
//! are never touched.

mod common;

use common::{Namespaces, enter, run};
use kubevirt_launcher::network::dhcp::{DhcpConfig, DhcpServer, serve};
use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Two namespaces joined by a veth pair: the server's and the client's.
struct Link {
    srv: String,
    cli: String,
    _namespaces: Namespaces,
}

impl Link {
    fn new() -> Self {
        let id = std::process::id();
        let (srv, cli) = (format!("kvdhcp-s{id}"), format!("kvdhcp-c{id}"));
        let namespaces = Namespaces::create(&[&srv, &cli]);
        run(&[
            "ip", "link", "add", "vs", "netns", &srv, "type", "veth", "peer", "name", "vc",
            "netns", &cli,
        ]);
        run(&["ip", "-n", &srv, "addr", "add", "10.0.2.1/24", "dev", "vs"]);
        run(&[
            "ip",
            "-n",
            &cli,
            "link",
            "set",
            "vc",
            "address",
            "02:00:00:00:00:01",
        ]);
        run(&["ip", "-n", &srv, "link", "set", "vs", "up"]);
        run(&["ip", "-n", &cli, "link", "set", "vc", "up"]);
        Link {
            srv,
            cli,
            _namespaces: namespaces,
        }
    }
}

#[test]
fn udhcpc_gets_the_guest_address_gateway_dns_and_search_domains() {
    let link = Link::new();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (srv, stop) = (link.srv.clone(), stop.clone());
        std::thread::spawn(move || {
            enter(&srv);
            let socket = UdpSocket::bind("0.0.0.0:67").expect("bind :67");
            kubevirt_launcher::network::dhcp::bind_to_device(&socket, "vs").expect("bind to vs");
            let config = DhcpConfig {
                server_ip: Ipv4Addr::new(10, 0, 2, 1),
                client_ip: Ipv4Addr::new(10, 0, 2, 2),
                prefix_len: 24,
                client_mac: [2, 0, 0, 0, 0, 1],
                router: Ipv4Addr::new(10, 0, 2, 1),
                dns: vec![Ipv4Addr::new(10, 96, 0, 10)],
                search: vec!["default.svc.cluster.local".into()],
                hostname: Some("demo".into()),
                mtu: Some(1400),
                lease: Duration::from_secs(3600),
            };
            serve(&socket, &DhcpServer::new(config), &stop).expect("serve");
        })
    };
    let dir = kubevirt_testsupport::tempdir("dhcp");
    let (script, result) = (dir.join("script.sh"), dir.join("lease.txt"));
    std::fs::write(&script, format!("#!/bin/sh\n[ \"$1\" = bound ] && echo \"ip=$ip subnet=$subnet router=$router dns=$dns search=$search hostname=$hostname mtu=$mtu\" > {}\nexit 0\n", result.display())).unwrap();
    run(&["chmod", "+x", script.to_str().unwrap()]);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &link.cli,
            "busybox",
            "udhcpc",
            "-i",
            "vc",
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            script.to_str().unwrap(),
        ])
        .output()
        .expect("busybox udhcpc (run scripts/setup.sh)");
    stop.store(true, Ordering::Relaxed);
    server.join().expect("server thread");
    assert!(
        out.status.success(),
        "udhcpc: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lease = std::fs::read_to_string(&result).expect("the client got a lease");
    for want in [
        "ip=10.0.2.2",
        "subnet=255.255.255.0",
        "router=10.0.2.1",
        "dns=10.96.0.10",
        "search=default.svc.cluster.local",
        "hostname=demo",
        "mtu=1400",
    ] {
        assert!(lease.contains(want), "{want} missing from {lease}");
    }
}
