//! Answering the guest: DISCOVER → OFFER, REQUEST → ACK (or NAK for another address), INFORM → ACK
//! without an address. Only the guest's MAC is answered.

use super::packet::{MessageType, Packet, opt};
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What the guest is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The server's (gateway side) address, also the server identifier.
    pub server_ip: Ipv4Addr,
    /// The guest's address.
    pub client_ip: Ipv4Addr,
    /// Prefix length of the guest network.
    pub prefix_len: u8,
    /// The guest's MAC: only it is answered.
    pub client_mac: [u8; 6],
    /// Default gateway.
    pub router: Ipv4Addr,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// DNS search domains.
    pub search: Vec<String>,
    /// Host name.
    pub hostname: Option<String>,
    /// Interface MTU.
    pub mtu: Option<u16>,
    /// Lease time (upstream hands out effectively infinite leases).
    pub lease: Duration,
}

/// The server.
#[derive(Debug, Clone)]
pub struct DhcpServer {
    config: DhcpConfig,
}

fn mask(prefix: u8) -> Ipv4Addr {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

/// RFC 1035 name encoding for the domain search option (no compression).
fn encode_search(domains: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in domains {
        for label in d.split('.').filter(|l| !l.is_empty()) {
            let bytes = &label.as_bytes()[..label.len().min(63)];
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
        }
        out.push(0);
    }
    out
}

impl DhcpServer {
    /// A server for `config`.
    pub fn new(config: DhcpConfig) -> Self {
        Self { config }
    }

    /// The reply to `req`, if it deserves one.
    pub fn respond(&self, req: &Packet) -> Option<Packet> {
        let c = &self.config;
        if req.op != 1 || req.hlen != 6 || req.mac() != c.client_mac {
            return None;
        }
        let (kind, yiaddr) = match req.message_type()? {
            MessageType::Discover => (MessageType::Offer, c.client_ip),
            MessageType::Request => {
                let wanted = req.ip_option(opt::REQUESTED_IP).unwrap_or(req.ciaddr);
                let for_us = req
                    .ip_option(opt::SERVER_ID)
                    .is_none_or(|s| s == c.server_ip);
                if !for_us {
                    return None; // the client chose another server
                }
                if wanted == c.client_ip {
                    (MessageType::Ack, c.client_ip)
                } else {
                    (MessageType::Nak, Ipv4Addr::UNSPECIFIED)
                }
            }
            MessageType::Inform => (MessageType::Ack, Ipv4Addr::UNSPECIFIED),
            _ => return None,
        };
        let mut options = BTreeMap::new();
        options.insert(opt::MESSAGE_TYPE, vec![kind as u8]);
        options.insert(opt::SERVER_ID, c.server_ip.octets().to_vec());
        if kind != MessageType::Nak {
            let lease = u32::try_from(c.lease.as_secs()).unwrap_or(u32::MAX);
            options.insert(opt::SUBNET_MASK, mask(c.prefix_len).octets().to_vec());
            options.insert(opt::ROUTER, c.router.octets().to_vec());
            let broadcast = u32::from(c.client_ip) | !u32::from(mask(c.prefix_len));
            options.insert(opt::BROADCAST, Ipv4Addr::from(broadcast).octets().to_vec());
            if !c.dns.is_empty() {
                options.insert(opt::DNS, c.dns.iter().flat_map(|d| d.octets()).collect());
            }
            if !c.search.is_empty() {
                options.insert(opt::DOMAIN_SEARCH, encode_search(&c.search));
                options.insert(opt::DOMAIN_NAME, c.search[0].as_bytes().to_vec());
            }
            if let Some(h) = &c.hostname {
                options.insert(opt::HOSTNAME, h.as_bytes().to_vec());
            }
            if let Some(mtu) = c.mtu {
                options.insert(opt::MTU, mtu.to_be_bytes().to_vec());
            }
            if kind != MessageType::Ack || yiaddr != Ipv4Addr::UNSPECIFIED {
                options.insert(opt::LEASE_TIME, lease.to_be_bytes().to_vec());
                options.insert(opt::RENEWAL_TIME, (lease / 2).to_be_bytes().to_vec());
                options.insert(opt::REBINDING_TIME, (lease / 8 * 7).to_be_bytes().to_vec());
            }
        }
        Some(Packet {
            op: 2,
            xid: req.xid,
            secs: 0,
            flags: req.flags,
            ciaddr: req.ciaddr,
            yiaddr,
            siaddr: c.server_ip,
            giaddr: req.giaddr,
            chaddr: req.chaddr,
            hlen: 6,
            options,
        })
    }
}

/// Bind `socket` to the network interface `ifname` (`SO_BINDTODEVICE`), so that replies leave
/// through the guest's tap even when the namespace has other routes.
pub fn bind_to_device(socket: &UdpSocket, ifname: &str) -> io::Result<()> {
    let name = std::ffi::CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    let len = libc::socklen_t::try_from(name.as_bytes_with_nul().len())
        .map_err(|_| io::Error::other("interface name too long"))?;
    // SAFETY: the fd is a valid socket owned by `socket` for the duration of the call, and the
    // option value points at `len` readable bytes of a NUL-terminated name that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Serve on `socket` (bound to port 67, broadcast allowed) until `stop` is set; replies go to the
/// limited broadcast address, as the guest has no address yet. Malformed packets are dropped.
pub fn serve(socket: &UdpSocket, server: &DhcpServer, stop: &AtomicBool) -> io::Result<()> {
    socket.set_broadcast(true)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        let Ok(req) = Packet::parse(&buf[..n]) else {
            continue;
        };
        if let Some(reply) = server.respond(&req) {
            socket.send_to(&reply.encode(), SocketAddrV4::new(Ipv4Addr::BROADCAST, 68))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DhcpConfig {
        DhcpConfig {
            server_ip: Ipv4Addr::new(10, 0, 2, 1),
            client_ip: Ipv4Addr::new(10, 0, 2, 2),
            prefix_len: 24,
            client_mac: [2, 0, 0, 0, 0, 1],
            router: Ipv4Addr::new(10, 0, 2, 1),
            dns: vec![Ipv4Addr::new(10, 96, 0, 10)],
            search: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            hostname: Some("demo".into()),
            mtu: Some(1400),
            lease: Duration::from_secs(86400),
        }
    }

    fn request(kind: MessageType, mac: [u8; 6], requested: Option<Ipv4Addr>) -> Packet {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&mac);
        let mut options = BTreeMap::from([(opt::MESSAGE_TYPE, vec![kind as u8])]);
        if let Some(r) = requested {
            options.insert(opt::REQUESTED_IP, r.octets().to_vec());
        }
        Packet {
            op: 1,
            xid: 7,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            hlen: 6,
            options,
        }
    }

    #[test]
    fn offers_and_acks_the_guest_address_only_to_the_guest() {
        let s = DhcpServer::new(config());
        let offer = s
            .respond(&request(MessageType::Discover, [2, 0, 0, 0, 0, 1], None))
            .unwrap();
        assert_eq!(
            (offer.message_type(), offer.yiaddr),
            (Some(MessageType::Offer), Ipv4Addr::new(10, 0, 2, 2))
        );
        assert_eq!(
            offer.ip_option(opt::SUBNET_MASK),
            Some(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(
            offer.options[&opt::DOMAIN_SEARCH][..8],
            [7, b'd', b'e', b'f', b'a', b'u', b'l', b't']
        );
        let ack = s
            .respond(&request(
                MessageType::Request,
                [2, 0, 0, 0, 0, 1],
                Some(Ipv4Addr::new(10, 0, 2, 2)),
            ))
            .unwrap();
        assert_eq!(ack.message_type(), Some(MessageType::Ack));
        let nak = s
            .respond(&request(
                MessageType::Request,
                [2, 0, 0, 0, 0, 1],
                Some(Ipv4Addr::new(10, 0, 2, 9)),
            ))
            .unwrap();
        assert_eq!(nak.message_type(), Some(MessageType::Nak));
        assert!(
            s.respond(&request(MessageType::Discover, [2, 0, 0, 0, 0, 9], None))
                .is_none(),
            "other MACs are ignored"
        );
    }
}
