//! A DHCP client (RFC 2131): DISCOVER, OFFER, REQUEST, ACK; NAK or silence starts over.

use super::Lease;
use crate::hw::TICKS_PER_SECOND;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OPT_MASK: u8 = 1;
const OPT_ROUTER: u8 = 3;
const OPT_DNS: u8 = 6;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_PARAMETERS: u8 = 55;
const OPT_END: u8 = 255;
const DISCOVER: u8 = 1;
const OFFER: u8 = 2;
const REQUEST: u8 = 3;
const ACK: u8 = 5;
const NAK: u8 = 6;
const RETRY: u64 = TICKS_PER_SECOND;

/// A message to broadcast.
pub struct Packet {
    /// Bytes.
    pub bytes: [u8; 300],
    /// Length.
    pub len: usize,
}

/// What a received message leads to.
pub enum Event {
    /// Nothing.
    None,
    /// Broadcast this.
    Send(Packet),
    /// The address is ours.
    Bound(Lease),
}

enum State {
    Selecting,
    Requesting { offered: [u8; 4] },
}

/// The client.
pub struct Client {
    xid: u32,
    state: State,
    next_send: u64,
}

fn message(xid: u32, mac: [u8; 6], kind: u8, request: Option<([u8; 4], [u8; 4])>) -> Packet {
    let mut p = Packet {
        bytes: [0; 300],
        len: 0,
    };
    let b = &mut p.bytes;
    b[0] = 1; // BOOTREQUEST
    b[1] = 1; // Ethernet
    b[2] = 6;
    b[4..8].copy_from_slice(&xid.to_be_bytes());
    b[10] = 0x80; // answer by broadcast: no address yet
    b[28..34].copy_from_slice(&mac);
    b[236..240].copy_from_slice(&MAGIC);
    let mut at = 240;
    let mut opt = |code: u8, data: &[u8]| {
        b[at] = code;
        b[at + 1] = data.len() as u8;
        b[at + 2..at + 2 + data.len()].copy_from_slice(data);
        at += 2 + data.len();
    };
    opt(OPT_MESSAGE_TYPE, &[kind]);
    if let Some((server, ip)) = request {
        opt(OPT_REQUESTED_IP, &ip);
        opt(OPT_SERVER_ID, &server);
    }
    opt(OPT_PARAMETERS, &[OPT_MASK, OPT_ROUTER, OPT_DNS]);
    b[at] = OPT_END;
    p.len = at + 1;
    p
}

/// The options of a message: (code, data) pairs, stopping at END or at a malformed one.
fn options(m: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 240;
    core::iter::from_fn(move || {
        loop {
            let code = *m.get(at)?;
            match code {
                0 => at += 1,
                OPT_END => return None,
                _ => {
                    let len = usize::from(*m.get(at + 1)?);
                    let data = m.get(at + 2..at + 2 + len)?;
                    at += 2 + len;
                    return Some((code, data));
                }
            }
        }
    })
}

fn ip4(d: &[u8]) -> Option<[u8; 4]> {
    d.get(..4).map(|d| [d[0], d[1], d[2], d[3]])
}

impl Client {
    /// A client with transaction id `xid`, ready to discover.
    pub fn new(xid: u32) -> Client {
        Client {
            xid,
            state: State::Selecting,
            next_send: 0,
        }
    }

    /// When [`Client::due`] next has a message (TSC ticks).
    pub fn next_send(&self) -> u64 {
        self.next_send
    }

    /// The message to (re)send now, if one is due.
    pub fn due(&mut self, now: u64, mac: [u8; 6]) -> Option<Packet> {
        if now < self.next_send {
            return None;
        }
        self.next_send = now + RETRY;
        // Silence after a REQUEST: start over.
        self.state = State::Selecting;
        Some(message(self.xid, mac, DISCOVER, None))
    }

    /// Handles a message from a server.
    pub fn receive(&mut self, m: &[u8], mac: [u8; 6], now: u64) -> Event {
        if m.len() < 240
            || m[0] != 2
            || m[4..8] != self.xid.to_be_bytes()
            || m[28..34] != mac
            || m[236..240] != MAGIC
        {
            return Event::None;
        }
        let yiaddr = [m[16], m[17], m[18], m[19]];
        let (mut kind, mut server, mut lease) = (
            0,
            None,
            Lease {
                ip: yiaddr,
                prefix: 32,
                ..Lease::default()
            },
        );
        for (code, data) in options(m) {
            match code {
                OPT_MESSAGE_TYPE => kind = data.first().copied().unwrap_or(0),
                OPT_SERVER_ID => server = ip4(data),
                OPT_MASK => {
                    lease.prefix =
                        ip4(data).map_or(32, |x| u32::from_be_bytes(x).count_ones() as u8)
                }
                OPT_ROUTER => lease.router = ip4(data).unwrap_or_default(),
                OPT_DNS => lease.dns = ip4(data).unwrap_or_default(),
                _ => {}
            }
        }
        match (kind, &self.state, server) {
            (OFFER, State::Selecting, Some(server)) => {
                self.state = State::Requesting { offered: yiaddr };
                self.next_send = now + RETRY;
                Event::Send(message(self.xid, mac, REQUEST, Some((server, yiaddr))))
            }
            (ACK, State::Requesting { offered }, _) if *offered == yiaddr => Event::Bound(lease),
            (NAK, _, _) => {
                self.state = State::Selecting;
                self.next_send = now;
                Event::None
            }
            _ => Event::None,
        }
    }
}
