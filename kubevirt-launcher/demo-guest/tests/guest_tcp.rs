//! The guest's TCP connection (`guest/inet/conn.rs`, plain `core` code) compiled for the host
//! and driven segment by segment: handshake, in-order receive with duplicate ACKs for what is
//! out of order, sends within the window and the peer's MSS, go-back-N retransmission after
//! the timer, and both FINs.

#[allow(dead_code)]
mod hw {
    pub const TICKS_PER_SECOND: u64 = 2_000_000_000;
}

// Both at the top, as `conn.rs` names its sibling `super::tcp`.
#[allow(dead_code)]
#[path = "../guest/inet/tcp.rs"]
mod tcp;

#[allow(dead_code)]
#[path = "../guest/inet/conn.rs"]
mod conn;

use conn::{Conn, MSS, Peer};
use tcp::{ACK, FIN, SYN, Segment};

const PEER: Peer = Peer {
    mac: [2, 0, 0, 0, 0, 9],
    ip: [10, 0, 2, 1],
    port: 40000,
};
const ISN: u32 = 1000;
const PEER_ISN: u32 = 0xffff_fff0; // wraps during the test

/// A TCP header (+ MSS option when `mss`) and `data`.
fn segment(seq: u32, ack: u32, flags: u8, window: u16, mss: Option<u16>, data: &[u8]) -> Vec<u8> {
    let header = if mss.is_some() { 24 } else { 20 };
    let mut t = vec![0u8; header];
    t[0..2].copy_from_slice(&PEER.port.to_be_bytes());
    t[2..4].copy_from_slice(&22u16.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((header / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    if let Some(m) = mss {
        t[20..24].copy_from_slice(&[2, 4, (m >> 8) as u8, m as u8]);
    }
    t.extend_from_slice(data);
    t
}

/// What the connection sends at `now`: (seq, ack, flags, window, mss option, data).
fn sent(c: &mut Conn, now: u64) -> Vec<(u32, u32, u8, u16, bool, Vec<u8>)> {
    let mut out = Vec::new();
    c.output(now, &mut |o| {
        out.push((o.seq, o.ack, o.flags, o.window, o.mss, o.data.to_vec()));
    });
    out
}

fn input(c: &mut Conn, bytes: &[u8]) -> bool {
    let seg = Segment::parse(bytes).expect("a well-formed segment");
    c.input(&seg, PEER, ISN)
}

/// An established connection; the peer offers `window` and MSS 1000.
fn established(window: u16) -> Box<Conn> {
    let mut c = Box::new(Conn::new());
    assert!(input(
        &mut c,
        &segment(PEER_ISN, 0, SYN, window, Some(1000), &[])
    ));
    let out = sent(&mut c, 0);
    assert_eq!(out.len(), 1);
    let (seq, ack, flags, _, mss, _) = &out[0];
    assert_eq!(
        (*seq, *ack, *flags, *mss),
        (ISN, PEER_ISN.wrapping_add(1), SYN | ACK, true)
    );
    assert!(!c.is_established());
    assert!(input(
        &mut c,
        &segment(PEER_ISN.wrapping_add(1), ISN + 1, ACK, window, None, &[])
    ));
    assert!(c.is_established());
    c
}

#[test]
fn data_in_order_is_taken_and_acknowledged_and_a_gap_gets_a_duplicate_ack() {
    let mut c = established(65535);
    let s = PEER_ISN.wrapping_add(1);
    // Past a gap: dropped, answered with what we expect.
    input(
        &mut c,
        &segment(s.wrapping_add(10), ISN + 1, ACK, 65535, None, b"later"),
    );
    assert!(c.received().is_empty());
    let out = sent(&mut c, 1);
    assert_eq!((out.len(), out[0].1), (1, s), "a duplicate ACK");
    // In order, across the sequence-number wrap.
    input(&mut c, &segment(s, ISN + 1, ACK, 65535, None, &[7u8; 30]));
    assert_eq!(c.received(), &[7u8; 30][..]);
    let out = sent(&mut c, 2);
    assert_eq!(out[0].1, s.wrapping_add(30));
    assert_eq!(
        usize::from(out[0].3),
        conn::RX - 30,
        "the window is the free space"
    );
    c.consume(30);
    assert!(c.received().is_empty());
    // A retransmission of what we have is acknowledged again, not taken twice.
    input(&mut c, &segment(s, ISN + 1, ACK, 65535, None, &[7u8; 30]));
    assert!(c.received().is_empty());
    assert_eq!(sent(&mut c, 3)[0].1, s.wrapping_add(30));
}

#[test]
fn sends_respect_mss_and_window_and_go_back_after_the_timer() {
    let mut c = established(2500);
    let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    assert_eq!(c.send(&data), 3000);
    // Window 2500, MSS 1000: 1000 + 1000 + 500.
    let out = sent(&mut c, 10);
    let sizes: Vec<usize> = out.iter().map(|o| o.5.len()).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert_eq!(out[1].0, ISN + 1 + 1000);
    assert!(out.iter().all(|o| o.5.len() <= usize::from(MSS)));
    // The first 1000 acknowledged, the window opens: the rest goes out.
    let peer_seq = PEER_ISN.wrapping_add(1);
    input(
        &mut c,
        &segment(peer_seq, ISN + 1 + 1000, ACK, 4000, None, &[]),
    );
    let out = sent(&mut c, 20);
    assert_eq!(out.iter().map(|o| o.5.len()).sum::<usize>(), 500);
    assert_eq!(out[0].0, ISN + 1 + 2500);
    // Nothing more is acknowledged: after the timer, everything from the oldest unacknowledged
    // byte again.
    assert!(sent(&mut c, 21).is_empty());
    let deadline = c.deadline().expect("the retransmission timer runs");
    let out = sent(&mut c, deadline);
    assert_eq!(out[0].0, ISN + 1 + 1000);
    assert_eq!(out[0].5, data[1000..2000]);
    assert_eq!(out.iter().map(|o| o.5.len()).sum::<usize>(), 2000);
    // All acknowledged: the timer stops.
    input(
        &mut c,
        &segment(peer_seq, ISN + 1 + 3000, ACK, 4000, None, &[]),
    );
    assert!(c.deadline().is_none());
}

#[test]
fn both_fins_close_the_connection() {
    let mut c = established(65535);
    let s = PEER_ISN.wrapping_add(1);
    c.send(b"bye");
    c.close();
    let out = sent(&mut c, 5);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].2 & FIN, FIN, "FIN after the data");
    assert_eq!(out[1].0, ISN + 1 + 3);
    input(
        &mut c,
        &segment(s, ISN + 1 + 4, ACK | FIN, 65535, None, &[]),
    );
    assert!(c.peer_closed());
    let out = sent(&mut c, 6);
    assert_eq!(out[0].1, s.wrapping_add(1), "the peer's FIN acknowledged");
    assert!(
        !c.is_established(),
        "closed once both FINs are acknowledged"
    );
    // A segment of the old connection now gets a reset from the caller.
    assert!(!input(&mut c, &segment(s, ISN + 5, ACK, 65535, None, b"x")));
}
