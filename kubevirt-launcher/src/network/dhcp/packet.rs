//! DHCP (RFC 2131/2132) packets: parsing and encoding.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use thiserror::Error;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const FIXED_LEN: usize = 236;

/// Option codes the server reads or writes.
pub mod opt {
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Host name.
    pub const HOSTNAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN_NAME: u8 = 15;
    /// Interface MTU.
    pub const MTU: u8 = 26;
    /// Broadcast address.
    pub const BROADCAST: u8 = 28;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time.
    pub const LEASE_TIME: u8 = 51;
    /// Message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Renewal (T1) time.
    pub const RENEWAL_TIME: u8 = 58;
    /// Rebinding (T2) time.
    pub const REBINDING_TIME: u8 = 59;
    /// Domain search list (RFC 3397).
    pub const DOMAIN_SEARCH: u8 = 119;
    /// Padding.
    pub const PAD: u8 = 0;
    /// End of options.
    pub const END: u8 = 255;
}

/// Why bytes are not a DHCP packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    /// Shorter than the fixed BOOTP header plus the magic cookie.
    #[error("DHCP packet too short: {0} bytes")]
    TooShort(usize),
    /// The magic cookie is missing.
    #[error("not a DHCP packet: the magic cookie is missing")]
    NoMagic,
    /// An option runs past the end.
    #[error("DHCP option {0} runs past the end of the packet")]
    Truncated(u8),
    /// The hardware address length is impossible.
    #[error("hardware address length {0} is more than 16")]
    BadHlen(u8),
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Client looks for servers.
    Discover = 1,
    /// Server offers an address.
    Offer = 2,
    /// Client requests the offered address.
    Request = 3,
    /// Client declines.
    Decline = 4,
    /// Server acknowledges.
    Ack = 5,
    /// Server refuses.
    Nak = 6,
    /// Client releases.
    Release = 7,
    /// Client asks for configuration only.
    Inform = 8,
}

impl MessageType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// A DHCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// 1 = request (client), 2 = reply (server).
    pub op: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client started.
    pub secs: u16,
    /// Flags (bit 15: broadcast).
    pub flags: u16,
    /// Client address (when it has one).
    pub ciaddr: Ipv4Addr,
    /// "Your" address: what the server gives.
    pub yiaddr: Ipv4Addr,
    /// Next server.
    pub siaddr: Ipv4Addr,
    /// Relay agent.
    pub giaddr: Ipv4Addr,
    /// Client hardware address (the first `hlen` bytes count).
    pub chaddr: [u8; 16],
    /// Hardware address length.
    pub hlen: u8,
    /// Options by code (the last occurrence of a code wins).
    pub options: BTreeMap<u8, Vec<u8>>,
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl Packet {
    /// Parse a UDP payload.
    pub fn parse(b: &[u8]) -> Result<Self, PacketError> {
        if b.len() < FIXED_LEN + MAGIC.len() {
            return Err(PacketError::TooShort(b.len()));
        }
        if b[FIXED_LEN..FIXED_LEN + 4] != MAGIC {
            return Err(PacketError::NoMagic);
        }
        if b[2] > 16 {
            return Err(PacketError::BadHlen(b[2]));
        }
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&b[28..44]);
        let mut options = BTreeMap::new();
        let mut i = FIXED_LEN + 4;
        while i < b.len() {
            let code = b[i];
            i += 1;
            match code {
                opt::PAD => continue,
                opt::END => break,
                _ => {
                    let len = usize::from(*b.get(i).ok_or(PacketError::Truncated(code))?);
                    let value = b
                        .get(i + 1..i + 1 + len)
                        .ok_or(PacketError::Truncated(code))?;
                    options.insert(code, value.to_vec());
                    i += 1 + len;
                }
            }
        }
        Ok(Self {
            op: b[0],
            hlen: b[2],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip(&b[12..16]),
            yiaddr: ip(&b[16..20]),
            siaddr: ip(&b[20..24]),
            giaddr: ip(&b[24..28]),
            chaddr,
            options,
        })
    }

    /// Encode (options longer than 255 bytes are split, as RFC 3396 allows).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; FIXED_LEN];
        b[0] = self.op;
        b[1] = 1; // Ethernet
        b[2] = self.hlen;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[8..10].copy_from_slice(&self.secs.to_be_bytes());
        b[10..12].copy_from_slice(&self.flags.to_be_bytes());
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[20..24].copy_from_slice(&self.siaddr.octets());
        b[24..28].copy_from_slice(&self.giaddr.octets());
        b[28..44].copy_from_slice(&self.chaddr);
        b.extend_from_slice(&MAGIC);
        for (code, value) in &self.options {
            for chunk in value.chunks(255) {
                b.push(*code);
                b.push(chunk.len() as u8);
                b.extend_from_slice(chunk);
            }
            if value.is_empty() {
                b.extend_from_slice(&[*code, 0]);
            }
        }
        b.push(opt::END);
        // Some clients want at least the 300-byte BOOTP minimum.
        if b.len() < 300 {
            b.resize(300, 0);
        }
        b
    }

    /// The message type, if present and known.
    pub fn message_type(&self) -> Option<MessageType> {
        self.options
            .get(&opt::MESSAGE_TYPE)
            .and_then(|v| v.first())
            .and_then(|t| MessageType::from_u8(*t))
    }

    /// The client MAC (first six bytes of `chaddr`).
    pub fn mac(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.chaddr[..6]);
        m
    }

    /// An IPv4 address option.
    pub fn ip_option(&self, code: u8) -> Option<Ipv4Addr> {
        self.options
            .get(&code)
            .filter(|v| v.len() == 4)
            .map(|v| ip(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn discover() -> Packet {
        let mut chaddr = [0u8; 16];
        chaddr[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        Packet {
            op: 1,
            xid: 0x1234_5678,
            secs: 0,
            flags: 0x8000,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr,
            hlen: 6,
            options: BTreeMap::from([
                (opt::MESSAGE_TYPE, vec![1]),
                (opt::HOSTNAME, b"guest".to_vec()),
            ]),
        }
    }

    #[test]
    fn round_trips() {
        let p = discover();
        let parsed = Packet::parse(&p.encode()).unwrap();
        assert_eq!(parsed, p);
        assert_eq!(parsed.message_type(), Some(MessageType::Discover));
        assert_eq!(parsed.mac(), [2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(Packet::parse(&[0; 10]), Err(PacketError::TooShort(10)));
        assert_eq!(Packet::parse(&[0; 300]), Err(PacketError::NoMagic));
        let mut b = discover().encode();
        b.truncate(FIXED_LEN + 4 + 2);
        b[FIXED_LEN + 5] = 200;
        assert!(matches!(Packet::parse(&b), Err(PacketError::Truncated(_))));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn anything_after_the_cookie_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut b = vec![0u8; FIXED_LEN];
            b.extend_from_slice(&MAGIC);
            b.extend_from_slice(&tail);
            if let Ok(p) = Packet::parse(&b) {
                let _ = Packet::parse(&p.encode()).expect("what parsed re-encodes to something parseable");
            }
        }
    }
}
