//! One TCP connection with state, for a service that talks more than one segment each way (the
//! SSH server): the three-way handshake, in-order receive into a buffer whose free space is the
//! window offered, send from a buffer within the peer's window and maximum segment size,
//! retransmission from the oldest unacknowledged byte (go-back-N) with an exponential back-off,
//! a zero-window probe, and both directions' FIN. Out-of-order segments are dropped and
//! answered with a duplicate ACK (the sender retransmits them); nothing here needs more on a
//! virtio link. A connection attempt while one is open replaces it (one client at a time).

use super::tcp::{ACK, FIN, PSH, RST, SYN, Segment};
use crate::hw::TICKS_PER_SECOND;

/// Receive buffer: the most the window ever offers.
pub const RX: usize = 16 * 1024;
/// Send buffer.
pub const TX: usize = 16 * 1024;
/// The segment size we announce: an Ethernet frame's 1500-byte IP packet.
pub const MSS: u16 = 1460;
const RTO_INITIAL: u64 = TICKS_PER_SECOND / 5;
const RTO_MAX: u64 = TICKS_PER_SECOND * 8;
/// Retransmissions of one segment before the connection is given up.
const MAX_RETRIES: u32 = 10;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Closed,
    SynReceived,
    Open,
}

/// The peer of a connection.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Peer {
    /// Its (or the gateway's) MAC.
    pub mac: [u8; 6],
    /// Its address.
    pub ip: [u8; 4],
    /// Its port.
    pub port: u16,
}

/// A segment to send.
pub struct Out<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Control bits.
    pub flags: u8,
    /// The window we offer.
    pub window: u16,
    /// Whether to carry the MSS option (SYN|ACK).
    pub mss: bool,
    /// Data.
    pub data: &'a [u8],
}

/// `a < b` in sequence space.
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// A connection (or none) on one local port.
pub struct Conn {
    state: State,
    /// Counts accepted connections, so the service notices a new one.
    pub generation: u32,
    peer: Peer,
    snd_una: u32,
    snd_nxt: u32,
    snd_wnd: u32,
    peer_mss: usize,
    rcv_nxt: u32,
    rx: [u8; RX],
    rx_len: usize,
    /// Bytes from `snd_una` on: sent and unacknowledged, then unsent.
    tx: [u8; TX],
    tx_len: usize,
    ack_due: bool,
    fin_queued: bool,
    fin_sent: bool,
    fin_acked: bool,
    peer_fin: bool,
    rto: u64,
    deadline: Option<u64>,
    retries: u32,
}

impl Conn {
    /// No connection.
    pub const fn new() -> Conn {
        Conn {
            state: State::Closed,
            generation: 0,
            peer: Peer {
                mac: [0; 6],
                ip: [0; 4],
                port: 0,
            },
            snd_una: 0,
            snd_nxt: 0,
            snd_wnd: 0,
            peer_mss: 536,
            rcv_nxt: 0,
            rx: [0; RX],
            rx_len: 0,
            tx: [0; TX],
            tx_len: 0,
            ack_due: false,
            fin_queued: false,
            fin_sent: false,
            fin_acked: false,
            peer_fin: false,
            rto: RTO_INITIAL,
            deadline: None,
            retries: 0,
        }
    }

    /// Whether the connection is established (data may flow).
    pub fn is_established(&self) -> bool {
        self.state == State::Open
    }

    /// The peer.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Data received in order and not yet taken.
    pub fn received(&self) -> &[u8] {
        &self.rx[..self.rx_len]
    }

    /// Takes `n` bytes of [`Conn::received`]; announces the opened window when it was small.
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.rx_len);
        let was_free = RX - self.rx_len;
        self.rx.copy_within(n..self.rx_len, 0);
        self.rx_len -= n;
        if was_free < 2 * usize::from(MSS) && RX - self.rx_len >= 2 * usize::from(MSS) {
            self.ack_due = true;
        }
    }

    /// Whether the peer sent its FIN (and everything before it was taken).
    pub fn peer_closed(&self) -> bool {
        self.peer_fin && self.rx_len == 0
    }

    /// Room in the send buffer.
    pub fn send_space(&self) -> usize {
        if self.state == State::Open && !self.fin_queued {
            TX - self.tx_len
        } else {
            0
        }
    }

    /// Queues `data` (as much as fits); returns how much.
    pub fn send(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.send_space());
        self.tx[self.tx_len..self.tx_len + n].copy_from_slice(&data[..n]);
        self.tx_len += n;
        n
    }

    /// Closes our direction once everything queued is sent.
    pub fn close(&mut self) {
        if self.state != State::Closed {
            self.fin_queued = true;
        }
    }

    /// Drops the connection without a word (the peer's reset, or giving up).
    fn abort(&mut self) {
        self.state = State::Closed;
        self.deadline = None;
    }

    /// When [`Conn::output`] must run for a retransmission.
    pub fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// Takes a segment for our port from `peer`; `isn` is the sequence number to start with
    /// if it opens a connection. Returns false when no connection wants it (the caller
    /// answers with a reset).
    pub fn input(&mut self, seg: &Segment, peer: Peer, isn: u32) -> bool {
        let ours = self.state != State::Closed && self.peer == peer;
        if seg.flags & RST != 0 {
            if ours {
                self.abort();
            }
            return true;
        }
        if seg.is_syn() {
            if ours && self.state == State::SynReceived && seg.seq.wrapping_add(1) == self.rcv_nxt {
                // Our SYN|ACK was lost: send it again.
                self.snd_nxt = self.snd_una;
                return true;
            }
            self.accept(seg, peer, isn);
            return true;
        }
        if !ours {
            return false;
        }
        if seg.flags & ACK != 0 {
            self.acknowledged(seg);
        }
        if self.state != State::Open {
            return true;
        }
        let fin = seg.flags & FIN != 0;
        if seg.seq == self.rcv_nxt && !self.peer_fin {
            let n = seg.payload.len().min(RX - self.rx_len);
            self.rx[self.rx_len..self.rx_len + n].copy_from_slice(&seg.payload[..n]);
            self.rx_len += n;
            self.rcv_nxt = self.rcv_nxt.wrapping_add(n as u32);
            if fin && n == seg.payload.len() {
                self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
                self.peer_fin = true;
            }
            if n > 0 || fin {
                self.ack_due = true;
            }
        } else if !seg.payload.is_empty() || fin {
            // A duplicate or a segment past a gap: say what we expect.
            self.ack_due = true;
        }
        true
    }

    fn accept(&mut self, seg: &Segment, peer: Peer, isn: u32) {
        *self = Conn {
            generation: self.generation.wrapping_add(1),
            ..Conn::new()
        };
        self.state = State::SynReceived;
        self.peer = peer;
        self.rcv_nxt = seg.seq.wrapping_add(1);
        self.snd_una = isn;
        self.snd_nxt = isn;
        self.snd_wnd = u32::from(seg.window);
        self.peer_mss = usize::from(seg.mss().clamp(64, MSS));
    }

    fn acknowledged(&mut self, seg: &Segment) {
        let ack = seg.ack;
        if self.state == State::SynReceived {
            if ack != self.snd_una.wrapping_add(1) {
                return;
            }
            // The SYN is acknowledged: data starts after it.
            self.state = State::Open;
            self.snd_una = ack;
            if before(self.snd_nxt, ack) {
                self.snd_nxt = ack;
            }
            self.snd_wnd = u32::from(seg.window);
            self.deadline = None;
            self.rto = RTO_INITIAL;
            self.retries = 0;
            return;
        }
        if before(self.snd_nxt, ack) || before(ack, self.snd_una) {
            return;
        }
        self.snd_wnd = u32::from(seg.window);
        let mut acked = ack.wrapping_sub(self.snd_una) as usize;
        if acked == 0 {
            return;
        }
        if self.fin_sent && ack == self.snd_nxt {
            self.fin_acked = true;
            acked -= 1;
        }
        let acked = acked.min(self.tx_len);
        self.tx.copy_within(acked..self.tx_len, 0);
        self.tx_len -= acked;
        self.snd_una = ack;
        self.rto = RTO_INITIAL;
        self.retries = 0;
        self.deadline = None;
    }

    /// Sends what is due through `emit`: a SYN|ACK, data within the window, our FIN, an ACK,
    /// or a retransmission when the timer ran out at `now`.
    pub fn output(&mut self, now: u64, emit: &mut dyn FnMut(Out)) {
        if self.state == State::Closed {
            return;
        }
        let window = (RX - self.rx_len).min(0xffff) as u16;
        let mut probe = false;
        if self.deadline.is_some_and(|d| now >= d) {
            self.retries += 1;
            if self.retries > MAX_RETRIES {
                emit(Out {
                    seq: self.snd_nxt,
                    ack: self.rcv_nxt,
                    flags: RST | ACK,
                    window,
                    mss: false,
                    data: &[],
                });
                self.abort();
                return;
            }
            // Go back to the oldest unacknowledged byte.
            probe = self.snd_nxt == self.snd_una && self.tx_len > 0;
            self.snd_nxt = self.snd_una;
            if !self.fin_acked {
                self.fin_sent = false;
            }
            self.rto = (self.rto * 2).min(RTO_MAX);
            self.deadline = None;
        }
        if self.state == State::SynReceived {
            if self.snd_nxt == self.snd_una {
                emit(Out {
                    seq: self.snd_una,
                    ack: self.rcv_nxt,
                    flags: SYN | ACK,
                    window,
                    mss: true,
                    data: &[],
                });
                self.snd_nxt = self.snd_una.wrapping_add(1);
                self.deadline = Some(now + self.rto);
            }
            return;
        }
        loop {
            let in_flight = self.snd_nxt.wrapping_sub(self.snd_una) as usize;
            let room = (self.snd_wnd as usize).saturating_sub(in_flight);
            let room = if probe { room.max(1) } else { room };
            let n = (self.tx_len - in_flight.min(self.tx_len))
                .min(room)
                .min(self.peer_mss);
            if n == 0 {
                break;
            }
            probe = false;
            emit(Out {
                seq: self.snd_nxt,
                ack: self.rcv_nxt,
                flags: ACK | PSH,
                window,
                mss: false,
                data: &self.tx[in_flight..in_flight + n],
            });
            self.snd_nxt = self.snd_nxt.wrapping_add(n as u32);
            self.ack_due = false;
            self.deadline.get_or_insert(now + self.rto);
        }
        let unsent =
            self.tx_len - (self.snd_nxt.wrapping_sub(self.snd_una) as usize).min(self.tx_len);
        if self.fin_queued && !self.fin_sent && unsent == 0 {
            emit(Out {
                seq: self.snd_nxt,
                ack: self.rcv_nxt,
                flags: FIN | ACK,
                window,
                mss: false,
                data: &[],
            });
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.fin_sent = true;
            self.ack_due = false;
            self.deadline.get_or_insert(now + self.rto);
        }
        if unsent > 0 && self.deadline.is_none() {
            // The peer's window is shut: probe it when the timer runs out.
            self.deadline = Some(now + self.rto);
        }
        if self.ack_due {
            emit(Out {
                seq: self.snd_nxt,
                ack: self.rcv_nxt,
                flags: ACK,
                window,
                mss: false,
                data: &[],
            });
            self.ack_due = false;
        }
        if self.peer_fin && self.fin_acked {
            self.abort();
        }
    }
}
