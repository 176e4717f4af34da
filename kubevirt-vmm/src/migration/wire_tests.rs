//! The framing's tests: every message round-trips, damage is named, random bytes never panic.

use super::*;
use proptest::prelude::*;

fn sample() -> Vec<Message> {
    let mut data = Box::new([0u8; PAGE_SIZE]);
    data[7] = 0x5a;
    vec![
        Message::Hello(Hello {
            vcpus: 2,
            memory_size: 8 << 20,
            regions: vec![(0, 8 << 20)],
            disks: vec![
                DiskInfo {
                    size: 1 << 30,
                    copy: true,
                },
                DiskInfo {
                    size: 4 << 20,
                    copy: false,
                },
            ],
        }),
        Message::Disk {
            round: 1,
            chunks: vec![
                DiskChunk {
                    disk: 0,
                    offset: 4096,
                    data: DiskData::Bytes(vec![0xa5; 1024]),
                },
                DiskChunk {
                    disk: 1,
                    offset: 1 << 20,
                    data: DiskData::Zeroes(64 << 10),
                },
            ],
        },
        Message::Pages {
            round: 3,
            pages: vec![Page::Zero(0x1000), Page::Data(0x2000, data)],
        },
        Message::Firmware(FirmwareState {
            code_size: 2 << 20,
            code_crc: 0xdead_beef,
            vars: vec![0x5a; 4096],
        }),
        Message::State(vec![1, 2, 3]),
        Message::Abort("cancelled".into()),
        Message::Go,
        Message::Ready,
        Message::Ack,
        Message::Error("no".into()),
    ]
}

fn stream() -> Vec<u8> {
    let mut out = Vec::new();
    write_preamble(&mut out).unwrap();
    for m in sample() {
        write_message(&mut out, &m).unwrap();
    }
    out
}

/// Reads a whole stream: the preamble and frames until the end.
fn read_all(bytes: &[u8]) -> Result<Vec<Message>, WireError> {
    let mut r = bytes;
    read_preamble(&mut r)?;
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(read_message(&mut r)?);
    }
    Ok(out)
}

#[test]
fn every_message_round_trips() {
    assert_eq!(read_all(&stream()).unwrap(), sample());
}

#[test]
fn a_zero_page_costs_eight_bytes() {
    let one = Message::Pages {
        round: 0,
        pages: vec![Page::Zero(0)],
    }
    .encode()
    .len();
    let none = Message::Pages {
        round: 0,
        pages: vec![],
    }
    .encode()
    .len();
    assert_eq!(one - none, 8);
}

#[test]
fn damage_is_named() {
    let s = stream();
    let err = read_all(&s[..s.len() - 2]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let mut flipped = s.clone();
    flipped[40] ^= 0x10;
    let err = read_all(&flipped).unwrap_err();
    assert!(matches!(err, WireError::Checksum { .. }), "{err}");
    let err = read_all(b"GET / HTTP/1.1\r\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("not a kubevirt-vmm migration stream"),
        "{err}"
    );
    let mut v1 = s.clone();
    v1[8] = 1;
    assert!(matches!(
        read_all(&v1).unwrap_err(),
        WireError::Version { found: 1 }
    ));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = read_all(&bytes);
        let mut with_preamble = MAGIC.to_vec();
        with_preamble.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        with_preamble.extend_from_slice(&bytes);
        let _ = read_all(&with_preamble);
    }

    #[test]
    fn flipped_or_cut_streams_error_without_panic(
        at in 0usize..20_000, bit in 0u8..8, cut in any::<bool>()
    ) {
        let s = stream();
        let at = at % s.len();
        if cut {
            // Cut at a frame boundary, the stream is a shorter valid one: the target
            // then waits for more and errors when the stream ends (see target.rs).
            match read_all(&s[..at]) {
                Ok(messages) => prop_assert!(sample().starts_with(&messages)),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        } else {
            let mut d = s.clone();
            d[at] ^= 1 << bit;
            prop_assert!(read_all(&d).is_err());
        }
    }
}
