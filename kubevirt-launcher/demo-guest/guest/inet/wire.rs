//! Frame and packet layouts: parsing what arrives (never trusting a length), building replies.

/// ARP.
pub const ETH_ARP: u16 = 0x0806;
/// IPv4.
pub const ETH_IPV4: u16 = 0x0800;

/// An Ethernet frame.
pub struct Frame<'a> {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType.
    pub ethertype: u16,
    /// What follows the header.
    pub payload: &'a [u8],
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

fn ip_at(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

impl<'a> Frame<'a> {
    /// Parses `b`.
    pub fn parse(b: &'a [u8]) -> Option<Frame<'a>> {
        (b.len() >= 14).then(|| Frame {
            dst: mac_at(b, 0),
            src: mac_at(b, 6),
            ethertype: u16::from_be_bytes([b[12], b[13]]),
            payload: &b[14..],
        })
    }
}

/// An IPv4 packet (options skipped, fragments ignored).
pub struct Ipv4<'a> {
    /// Source.
    pub src: [u8; 4],
    /// Destination.
    pub dst: [u8; 4],
    /// Protocol.
    pub proto: u8,
    /// What follows the header, cut to the total length.
    pub payload: &'a [u8],
}

impl<'a> Ipv4<'a> {
    /// Parses `b`.
    pub fn parse(b: &'a [u8]) -> Option<Ipv4<'a>> {
        if b.len() < 20 || b[0] >> 4 != 4 {
            return None;
        }
        let header = usize::from(b[0] & 15) * 4;
        let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
        let fragment = u16::from_be_bytes([b[6], b[7]]) & 0x3fff;
        if header < 20 || total < header || total > b.len() || fragment != 0 {
            return None;
        }
        Some(Ipv4 {
            src: ip_at(b, 12),
            dst: ip_at(b, 16),
            proto: b[9],
            payload: &b[header..total],
        })
    }
}

/// A UDP datagram.
pub struct Udp<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Data.
    pub payload: &'a [u8],
}

impl<'a> Udp<'a> {
    /// Parses `b`.
    pub fn parse(b: &'a [u8]) -> Option<Udp<'a>> {
        let len = usize::from(u16::from_be_bytes([*b.get(4)?, *b.get(5)?]));
        (len >= 8 && len <= b.len()).then(|| Udp {
            src_port: u16::from_be_bytes([b[0], b[1]]),
            dst_port: u16::from_be_bytes([b[2], b[3]]),
            payload: &b[8..len],
        })
    }
}

/// The Internet checksum of `b`, starting from `sum`.
pub fn checksum(b: &[u8], mut sum: u32) -> u16 {
    for c in b.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP/UDP pseudo-header's partial sum.
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let words = [
        u16::from_be_bytes([src[0], src[1]]),
        u16::from_be_bytes([src[2], src[3]]),
        u16::from_be_bytes([dst[0], dst[1]]),
        u16::from_be_bytes([dst[2], dst[3]]),
        u16::from(proto),
        len as u16,
    ];
    words.iter().map(|&w| u32::from(w)).sum()
}

/// Writes an Ethernet frame into `out`; returns its length.
pub fn ethernet(
    out: &mut [u8],
    dst: [u8; 6],
    src: [u8; 6],
    ethertype: u16,
    payload: &[u8],
) -> usize {
    let n = (14 + payload.len()).min(out.len());
    out[..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
    out[14..n].copy_from_slice(&payload[..n - 14]);
    n
}

/// Writes an IPv4 packet (TTL 64, don't fragment) into `out`; returns its length.
pub fn ipv4(out: &mut [u8], src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> usize {
    let n = (20 + payload.len()).min(out.len());
    out[..20].fill(0);
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
    out[6] = 0x40;
    out[8] = 64;
    out[9] = proto;
    out[12..16].copy_from_slice(&src);
    out[16..20].copy_from_slice(&dst);
    let sum = checksum(&out[..20], 0);
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    out[20..n].copy_from_slice(&payload[..n - 20]);
    n
}

/// Writes a UDP datagram without a checksum (allowed over IPv4) into `out`.
pub fn udp(out: &mut [u8], sport: u16, dport: u16, payload: &[u8]) -> usize {
    let n = (8 + payload.len()).min(out.len());
    out[0..2].copy_from_slice(&sport.to_be_bytes());
    out[2..4].copy_from_slice(&dport.to_be_bytes());
    out[4..6].copy_from_slice(&(n as u16).to_be_bytes());
    out[6..8].fill(0);
    out[8..n].copy_from_slice(&payload[..n - 8]);
    n
}
