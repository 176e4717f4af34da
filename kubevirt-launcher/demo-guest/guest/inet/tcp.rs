//! A stateless TCP responder for the guest's HTTP service on port 80: every segment is answered
//! from what it carries alone, so no connection table is kept and a retransmission gets the same
//! answer. A request must arrive in one segment (every HTTP client's small GET does); the answer
//! (one segment, with FIN) says the host name and the path asked for.

/// The HTTP port.
pub const HTTP_PORT: u16 = 80;
/// Control bits.
pub const FIN: u8 = 0x01;
/// Synchronise.
pub const SYN: u8 = 0x02;
/// Reset.
pub const RST: u8 = 0x04;
/// Push.
pub const PSH: u8 = 0x08;
/// Acknowledgement.
pub const ACK: u8 = 0x10;
/// The largest answer body: one segment within the frame.
const BODY: usize = 384;

/// A segment to send back: header fields and payload.
pub struct Reply {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Control bits.
    pub flags: u8,
    /// Payload bytes.
    pub data: [u8; 512],
    /// Payload length.
    pub len: usize,
}

/// A segment that arrived, parsed.
pub struct Segment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Control bits.
    pub flags: u8,
    /// The window the sender offers.
    pub window: u16,
    /// Options (between the fixed header and the data).
    pub options: &'a [u8],
    /// Data.
    pub payload: &'a [u8],
}

impl<'a> Segment<'a> {
    /// Parses `t` (a TCP header and payload), never trusting the data offset.
    pub fn parse(t: &'a [u8]) -> Option<Segment<'a>> {
        let offset = usize::from(*t.get(12)? >> 4) * 4;
        if offset < 20 || t.len() < offset {
            return None;
        }
        let be32 = |i: usize| u32::from_be_bytes([t[i], t[i + 1], t[i + 2], t[i + 3]]);
        Some(Segment {
            src_port: u16::from_be_bytes([t[0], t[1]]),
            dst_port: u16::from_be_bytes([t[2], t[3]]),
            seq: be32(4),
            ack: be32(8),
            flags: t[13],
            window: u16::from_be_bytes([t[14], t[15]]),
            options: &t[20..offset],
            payload: &t[offset..],
        })
    }

    /// Whether this is a connection attempt (SYN without ACK).
    pub fn is_syn(&self) -> bool {
        self.flags & (SYN | ACK) == SYN
    }

    /// The maximum segment size the sender announced (SYN), else the default 536.
    pub fn mss(&self) -> u16 {
        let mut o = self.options;
        while let [kind, rest @ ..] = o {
            match kind {
                0 => break,
                1 => o = rest,
                2 if rest.len() >= 3 && rest[0] == 4 => {
                    return u16::from_be_bytes([rest[1], rest[2]]);
                }
                _ => {
                    let Some(&len) = rest.first() else { break };
                    if len < 2 || usize::from(len) > o.len() {
                        break;
                    }
                    o = &o[usize::from(len)..];
                }
            }
        }
        536
    }

    /// The reset refusing this connection attempt.
    pub fn refuse(&self) -> Reply {
        if !self.is_syn() && self.flags & ACK != 0 {
            // A segment of a connection we do not have: RFC 793's reset for it.
            return reply(self.ack, 0, RST, &[]);
        }
        reply(0, self.seq.wrapping_add(1), RST | ACK, &[])
    }

    /// The HTTP service's answer to this segment, if it needs one.
    pub fn serve_http(&self, hostname: &[u8]) -> Option<Reply> {
        if self.flags & RST != 0 {
            return None;
        }
        if self.is_syn() {
            return Some(reply(isn(self), self.seq.wrapping_add(1), SYN | ACK, &[]));
        }
        if self.flags & ACK == 0 {
            return None;
        }
        let end = self
            .seq
            .wrapping_add(self.payload.len() as u32)
            .wrapping_add(u32::from(self.flags & FIN));
        if !self.payload.is_empty() {
            let mut body = [0u8; BODY];
            let n = answer(self.payload, hostname, &mut body);
            return Some(reply(self.ack, end, ACK | PSH | FIN, &body[..n]));
        }
        // The client's FIN after our answer: acknowledge it.
        (self.flags & FIN != 0).then(|| reply(self.ack, end, ACK, &[]))
    }
}

/// Our initial sequence number for a connection: derived from the client's, so a repeated SYN
/// gets the same answer.
fn isn(s: &Segment) -> u32 {
    s.seq.rotate_left(13) ^ 0x6b76_7273 ^ (u32::from(s.src_port) << 16)
}

fn reply(seq: u32, ack: u32, flags: u8, data: &[u8]) -> Reply {
    let mut r = Reply {
        seq,
        ack,
        flags,
        data: [0; 512],
        len: data.len(),
    };
    r.data[..data.len()].copy_from_slice(data);
    r
}

/// Writes the HTTP/1.0 answer to `request` into `out`: `200` with "HOSTNAME PATH\n" for a GET or
/// HEAD, `400` otherwise; returns its length.
fn answer(request: &[u8], hostname: &[u8], out: &mut [u8; BODY]) -> usize {
    let line = request
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let mut words = line.split(|&b| b == b' ');
    let (method, path) = (words.next().unwrap_or(&[]), words.next().unwrap_or(&[]));
    let mut w = Writer { out, at: 0 };
    if (method == b"GET" || method == b"HEAD") && path.first() == Some(&b'/') {
        let path = &path[..path.len().min(96)];
        let len = hostname.len() + 1 + path.len() + 1;
        w.put(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: ",
        );
        w.dec(len);
        w.put(b"\r\n\r\n");
        if method == b"GET" {
            w.put(hostname);
            w.put(b" ");
            w.put(path);
            w.put(b"\n");
        }
    } else {
        w.put(b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    }
    w.at
}

struct Writer<'a> {
    out: &'a mut [u8; BODY],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, b: &[u8]) {
        let n = b.len().min(BODY - self.at);
        self.out[self.at..self.at + n].copy_from_slice(&b[..n]);
        self.at += n;
    }

    fn dec(&mut self, v: usize) {
        let mut digits = [0u8; 20];
        let (mut v, mut i) = (v, digits.len());
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }
}
