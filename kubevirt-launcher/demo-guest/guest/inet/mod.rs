//! A tiny IPv4 host: DHCP for its address, ARP and ICMP echo answered, an HTTP service on port
//! 80 ([`tcp`], stateless), a TCP connection with state on port 22 for the SSH server
//! ([`conn`]), a UDP echo service on port 7 (RFC 862); TCP connection attempts to other ports are logged and refused with a reset (so a
//! forwarded port is visible end to end).

pub mod conn;
pub mod dhcp;
pub mod tcp;
pub mod wire;

use crate::hw::{TICKS_PER_SECOND, console, rdtsc};
use crate::virtio::net::{MAX_FRAME, Nic};
use wire::{ETH_ARP, ETH_IPV4, Frame};

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// The SSH server's port.
pub const SSH_PORT: u16 = 22;
/// The UDP echo service's port.
pub const ECHO_PORT: u16 = 7;

/// The interface's addresses.
#[derive(Clone, Copy, Default)]
pub struct Lease {
    /// Our address.
    pub ip: [u8; 4],
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub router: [u8; 4],
    /// First DNS server.
    pub dns: [u8; 4],
}

/// The host.
pub struct Host {
    /// The NIC.
    pub nic: Nic,
    /// The address, once DHCP gave one.
    pub lease: Option<Lease>,
    dhcp: dhcp::Client,
    /// Echo requests answered.
    pub pings: u64,
    /// HTTP requests answered.
    pub http_requests: u64,
    /// UDP echo datagrams answered.
    pub udp_echoes: u64,
    hostname: [u8; 64],
    hostname_len: usize,
    /// The SSH server's connection.
    pub ssh: conn::Conn,
    /// Whether the SSH server runs (else port 22 is refused like any other).
    pub ssh_listening: bool,
}

impl Host {
    /// A host on `nic`, starting DHCP.
    pub fn new(nic: Nic) -> Host {
        let xid =
            (rdtsc() as u32) ^ u32::from_be_bytes([nic.mac[2], nic.mac[3], nic.mac[4], nic.mac[5]]);
        Host {
            nic,
            lease: None,
            dhcp: dhcp::Client::new(xid),
            pings: 0,
            http_requests: 0,
            udp_echoes: 0,
            hostname: [0; 64],
            hostname_len: 0,
            ssh: conn::Conn::new(),
            ssh_listening: false,
        }
    }

    /// Sets the name the HTTP service answers with.
    pub fn set_hostname(&mut self, name: &[u8]) {
        let n = name.len().min(self.hostname.len());
        self.hostname[..n].copy_from_slice(&name[..n]);
        self.hostname_len = n;
    }

    /// Handles whatever arrived and runs the DHCP timers.
    pub fn poll(&mut self) {
        let mut buf = [0u8; MAX_FRAME];
        while let Some(n) = self.nic.receive(&mut buf) {
            self.handle(&buf[..n]);
        }
        if self.lease.is_none() {
            let mac = self.nic.mac;
            if let Some(packet) = self.dhcp.due(rdtsc(), mac) {
                self.send_dhcp(&packet);
            }
        }
        self.flush();
    }

    /// Sends what the connection has due (data, ACKs, retransmissions).
    pub fn flush(&mut self) {
        let Some(lease) = self.lease else { return };
        let Host { nic, ssh, .. } = self;
        let peer = ssh.peer();
        ssh.output(rdtsc(), &mut |out| {
            let mut t = [0u8; 24 + conn::MSS as usize];
            let header = if out.mss { 24 } else { 20 };
            t[0..2].copy_from_slice(&SSH_PORT.to_be_bytes());
            t[2..4].copy_from_slice(&peer.port.to_be_bytes());
            t[4..8].copy_from_slice(&out.seq.to_be_bytes());
            t[8..12].copy_from_slice(&out.ack.to_be_bytes());
            t[12] = (header as u8 / 4) << 4;
            t[13] = out.flags;
            t[14..16].copy_from_slice(&out.window.to_be_bytes());
            if out.mss {
                t[20..24].copy_from_slice(&[2, 4, (conn::MSS >> 8) as u8, conn::MSS as u8]);
            }
            let n = header + out.data.len().min(conn::MSS as usize);
            t[header..n].copy_from_slice(&out.data[..n - header]);
            let sum = wire::checksum(
                &t[..n],
                wire::pseudo_header_sum(lease.ip, peer.ip, PROTO_TCP, n),
            );
            t[16..18].copy_from_slice(&sum.to_be_bytes());
            transmit(nic, lease.ip, peer.mac, peer.ip, PROTO_TCP, &t[..n]);
        });
    }

    /// When [`Host::poll`] must run next even if no interrupt comes (a DHCP retransmission;
    /// every millisecond for a NIC without interrupts), in TSC ticks; `None`: only when
    /// interrupted.
    pub fn next_deadline(&self) -> Option<u64> {
        let dhcp = self.lease.is_none().then(|| self.dhcp.next_send());
        let poll = (!self.nic.interrupts).then(|| rdtsc() + TICKS_PER_SECOND / 1000);
        [dhcp, poll, self.ssh.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    fn handle(&mut self, frame: &[u8]) {
        let Some(f) = Frame::parse(frame) else { return };
        if f.dst != self.nic.mac && f.dst != BROADCAST_MAC {
            return;
        }
        match f.ethertype {
            ETH_ARP => self.arp(&f),
            ETH_IPV4 => self.ipv4(&f),
            _ => {}
        }
    }

    fn arp(&mut self, f: &Frame) {
        let p = f.payload;
        let Some(lease) = self.lease else { return };
        // Ethernet/IPv4 request for our address.
        if p.len() < 28 || p[..8] != [0, 1, 8, 0, 6, 4, 0, 1] || p[24..28] != lease.ip {
            return;
        }
        let mut reply = [0u8; 28];
        reply[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
        reply[8..14].copy_from_slice(&self.nic.mac);
        reply[14..18].copy_from_slice(&lease.ip);
        reply[18..28].copy_from_slice(&p[8..18]);
        self.send(f.src, ETH_ARP, &reply);
    }

    fn ipv4(&mut self, f: &Frame) {
        let Some(ip) = wire::Ipv4::parse(f.payload) else {
            return;
        };
        let ours = self.lease.is_some_and(|l| l.ip == ip.dst);
        match ip.proto {
            PROTO_UDP => {
                let Some(u) = wire::Udp::parse(ip.payload) else {
                    return;
                };
                if u.dst_port == ECHO_PORT && ours {
                    let (src, dst) = (self.lease.map_or([0; 4], |l| l.ip), ip.src);
                    let payload = u.payload;
                    self.udp_echoes += 1;
                    self.send_udp(f.src, src, dst, ECHO_PORT, u.src_port, payload);
                    return;
                }
                if u.dst_port == 68 && self.lease.is_none() {
                    let mac = self.nic.mac;
                    let now = rdtsc();
                    match self.dhcp.receive(u.payload, mac, now) {
                        dhcp::Event::Send(packet) => {
                            self.send_dhcp(&packet);
                        }
                        dhcp::Event::Bound(lease) => {
                            console::str("eth0: ");
                            console::ip(lease.ip);
                            console::put(b'/');
                            console::dec(u64::from(lease.prefix));
                            console::str(" gateway ");
                            console::ip(lease.router);
                            console::str(" dns ");
                            console::ip(lease.dns);
                            console::str(" (DHCP)\n");
                            self.lease = Some(lease);
                        }
                        dhcp::Event::None => {}
                    }
                }
            }
            PROTO_ICMP if ours && ip.payload.len() >= 8 && ip.payload[0] == 8 => {
                let mut reply = [0u8; MAX_FRAME];
                let n = ip.payload.len();
                reply[..n].copy_from_slice(ip.payload);
                reply[0] = 0; // echo reply
                reply[2..4].fill(0);
                let sum = wire::checksum(&reply[..n], 0);
                reply[2..4].copy_from_slice(&sum.to_be_bytes());
                self.pings += 1;
                self.send_ip(f.src, ip.src, PROTO_ICMP, &reply[..n]);
            }
            PROTO_TCP if ours => self.tcp(f, &ip),
            _ => {}
        }
    }

    /// Port 80 is the HTTP service; a connection attempt to any other port is logged and
    /// refused (RST|ACK to the SYN).
    fn tcp(&mut self, f: &Frame, ip: &wire::Ipv4) {
        let Some(seg) = tcp::Segment::parse(ip.payload) else {
            return;
        };
        if seg.dst_port == SSH_PORT && self.ssh_listening {
            let peer = conn::Peer {
                mac: f.src,
                ip: ip.src,
                port: seg.src_port,
            };
            let isn = if seg.is_syn() {
                initial_sequence(&seg)
            } else {
                0
            };
            if self.ssh.input(&seg, peer, isn) {
                return;
            }
        }
        let reply = if seg.dst_port == tcp::HTTP_PORT {
            let hostname = self.hostname;
            let Some(r) = seg.serve_http(&hostname[..self.hostname_len]) else {
                return;
            };
            if r.len > 0 {
                self.http_requests += 1;
            }
            r
        } else if seg.dst_port == SSH_PORT && self.ssh_listening {
            if seg.flags & tcp::RST != 0 {
                return;
            }
            seg.refuse()
        } else if seg.is_syn() {
            console::str("tcp: connection from ");
            console::ip(ip.src);
            console::put(b':');
            console::dec(u64::from(seg.src_port));
            console::str(" to port ");
            console::dec(u64::from(seg.dst_port));
            console::str(" refused\n");
            seg.refuse()
        } else {
            return;
        };
        let Some(lease) = self.lease else { return };
        let mut t = [0u8; 20 + 512];
        t[0..2].copy_from_slice(&seg.dst_port.to_be_bytes());
        t[2..4].copy_from_slice(&seg.src_port.to_be_bytes());
        t[4..8].copy_from_slice(&reply.seq.to_be_bytes());
        t[8..12].copy_from_slice(&reply.ack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = reply.flags;
        t[14..16].copy_from_slice(&8192u16.to_be_bytes()); // window
        t[20..20 + reply.len].copy_from_slice(&reply.data[..reply.len]);
        let n = 20 + reply.len;
        let sum = wire::checksum(
            &t[..n],
            wire::pseudo_header_sum(lease.ip, ip.src, PROTO_TCP, n),
        );
        t[16..18].copy_from_slice(&sum.to_be_bytes());
        self.send_ip(f.src, ip.src, PROTO_TCP, &t[..n]);
    }

    /// A DHCP client message: broadcast from 0.0.0.0:68 to port 67.
    fn send_dhcp(&mut self, packet: &dhcp::Packet) {
        let bytes = &packet.bytes[..packet.len];
        self.send_udp(BROADCAST_MAC, [0; 4], [255; 4], 68, 67, bytes);
    }

    fn send(&mut self, dst: [u8; 6], ethertype: u16, payload: &[u8]) {
        let mut frame = [0u8; MAX_FRAME];
        let n = wire::ethernet(&mut frame, dst, self.nic.mac, ethertype, payload);
        self.nic.send(&frame[..n.max(60)]);
    }

    fn send_ip(&mut self, dst_mac: [u8; 6], dst: [u8; 4], proto: u8, payload: &[u8]) {
        let src = self.lease.map_or([0; 4], |l| l.ip);
        transmit(&mut self.nic, src, dst_mac, dst, proto, payload);
    }

    fn send_udp(
        &mut self,
        dst_mac: [u8; 6],
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) {
        let mut u = [0u8; MAX_FRAME - 34];
        let n = wire::udp(&mut u, sport, dport, payload);
        let mut packet = [0u8; MAX_FRAME - 14];
        let m = wire::ipv4(&mut packet, src, dst, PROTO_UDP, &u[..n]);
        self.send(dst_mac, ETH_IPV4, &packet[..m]);
    }
}

/// Sends an IPv4 packet from `src` to `dst` (at `dst_mac`) on `nic`.
fn transmit(
    nic: &mut Nic,
    src: [u8; 4],
    dst_mac: [u8; 6],
    dst: [u8; 4],
    proto: u8,
    payload: &[u8],
) {
    let mut packet = [0u8; MAX_FRAME - 14];
    let n = wire::ipv4(&mut packet, src, dst, proto, payload);
    let mut frame = [0u8; MAX_FRAME];
    let m = wire::ethernet(&mut frame, dst_mac, nic.mac, ETH_IPV4, &packet[..n]);
    nic.send(&frame[..m.max(60)]);
}

/// A connection's first sequence number: unpredictable when the CPU has RDRAND.
fn initial_sequence(seg: &tcp::Segment) -> u32 {
    let mut r = [0u8; 4];
    if crate::hw::random::fill(&mut r) {
        u32::from_ne_bytes(r)
    } else {
        (rdtsc() as u32) ^ seg.seq.rotate_left(7)
    }
}
