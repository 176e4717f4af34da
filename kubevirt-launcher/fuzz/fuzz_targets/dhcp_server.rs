//! libFuzzer target for the launcher's DHCP server, which reads whatever the guest sends on
//! the masquerade tap. The input is a UDP payload.
//!
//! Beyond "no panic, no hang": a packet that parses encodes to bytes that parse back to the
//! same packet, and the server's reply (to a server configured for the packet's own MAC, so
//! every message type reaches it) is a BOOTP reply for the same transaction that parses back
//! to itself.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-launcher/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run dhcp_server -- -max_total_time=60`

#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use kubevirt_launcher_fuzz::dhcp::{DhcpConfig, DhcpServer, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    let again = Packet::parse(&packet.encode()).expect("an encoded packet parses");
    assert_eq!(again, packet, "encode → parse changed the packet");

    let server = DhcpServer::new(DhcpConfig {
        server_ip: Ipv4Addr::new(10, 0, 2, 1),
        client_ip: Ipv4Addr::new(10, 0, 2, 2),
        prefix_len: 24,
        client_mac: packet.mac(),
        router: Ipv4Addr::new(10, 0, 2, 1),
        dns: vec![Ipv4Addr::new(10, 96, 0, 10)],
        search: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
        hostname: Some("demo-vm".into()),
        mtu: Some(1500),
        lease: Duration::from_secs(86_400),
    });
    if let Some(reply) = server.respond(&packet) {
        assert_eq!((reply.op, reply.xid), (2, packet.xid), "a reply to another transaction");
        assert!(reply.message_type().is_some(), "a reply without a message type");
        let back = Packet::parse(&reply.encode()).expect("a reply parses");
        assert_eq!(back, reply, "the reply does not survive encode → parse");
    }
});
