//! The migration stream's framing: a preamble, then checksummed frames both ways.
//!
//! ```text
//! preamble  "KVRSMIG1" (8) | version u32 LE                       source -> target, once
//! frame     tag u8 | payload length u32 LE | payload | CRC-32 u32 LE of tag, length, payload
//!
//! source -> target                         target -> source
//!   Hello  vcpus u32, RAM size u64,          Ready   (layout accepted, RAM allocated)
//!          regions u32, (gpa u64, size u64)*,
//!          disks (see disk_wire.rs)
//!   Pages  round u32, count u32,             Ack     (state applied, VM built)
//!          (gpa|ZERO u64, [4096 bytes])*
//!   Disk   disk contents (see disk_wire.rs)
//!   Firmware  image size u64, image CRC-32 u32,
//!          UEFI variable store (the rest)
//!   State  sealed snapshot state             Error   reason (UTF-8)
//!   Abort  reason (UTF-8)
//!   Go     (the source gave the VM up: run it)
//! ```
//! A page entry's address has bit 0 set for a page of zeros (no data follows). Every decode
//! step checks lengths before it reads, so truncated, flipped or random bytes give a
//! [`WireError`] naming what is wrong, never a panic.

use std::io::{self, Read, Write};

pub use super::disk_wire::{DiskChunk, DiskData, DiskInfo};
use super::disk_wire::{append_chunks, append_disks, decode_chunks, decode_disks};
pub use crate::boot::firmware::FirmwareState;

/// The stream's first eight bytes.
pub const MAGIC: [u8; 8] = *b"KVRSMIG1";
/// The protocol version this build speaks (and the only one it accepts).
pub const WIRE_VERSION: u32 = 2;
/// Guest page size on the wire.
pub const PAGE_SIZE: usize = 4096;
/// Flag in a page entry's address: the page is all zeros, no data follows.
pub const ZERO_PAGE: u64 = 1;
/// Largest payload a frame may announce (a state frame with many vCPUs fits easily).
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// Most pages one `Pages` frame carries.
pub const PAGES_PER_FRAME: usize = 256;
/// Most RAM regions a `Hello` may describe.
const MAX_REGIONS: u32 = 64;

/// Errors reading or writing the stream. Each names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the stream or the socket failed.
    #[error("migration stream {op}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The stream ended in the middle of something.
    #[error("the migration stream was truncated: it ended inside {0}")]
    Truncated(&'static str),
    /// Not a kubevirt-vmm migration stream.
    #[error("not a kubevirt-vmm migration stream: it starts with {0:02x?}, not \"KVRSMIG1\"")]
    BadMagic(Vec<u8>),
    /// Another protocol version.
    #[error(
        "migration protocol version {found} is not supported: this kubevirt-vmm speaks version {WIRE_VERSION} only (migrate between the same versions)"
    )]
    Version {
        /// The version the peer sent.
        found: u32,
    },
    /// A frame with a tag this version does not know.
    #[error("the migration stream is corrupt: unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    /// A frame announcing more than [`MAX_PAYLOAD`] bytes.
    #[error("the migration stream is corrupt: a frame announces {0} bytes (at most {MAX_PAYLOAD})")]
    FrameTooLarge(u32),
    /// A frame whose checksum does not match.
    #[error(
        "the migration stream is corrupt: frame CRC-32 {computed:#010x} does not match the {stored:#010x} sent"
    )]
    Checksum {
        /// CRC sent.
        stored: u32,
        /// CRC of the bytes received.
        computed: u32,
    },
    /// A frame's payload does not parse.
    #[error("the migration stream is corrupt: {0}")]
    Malformed(String),
    /// A well-formed message at the wrong point of the protocol.
    #[error("migration protocol error: expected {expected}, received {got}")]
    Unexpected {
        /// What the protocol allows here.
        expected: &'static str,
        /// What came.
        got: &'static str,
    },
}

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> WireError {
    move |source| WireError::Io { op, source }
}

/// One page entry of a `Pages` frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    /// A page of zeros at this guest-physical address.
    Zero(u64),
    /// A page's contents.
    Data(u64, Box<[u8; PAGE_SIZE]>),
}

impl Page {
    /// The page's guest-physical address.
    pub fn gpa(&self) -> u64 {
        match self {
            Page::Zero(a) | Page::Data(a, _) => *a,
        }
    }
}

/// The layout the source announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// vCPU count.
    pub vcpus: u32,
    /// RAM size in bytes.
    pub memory_size: u64,
    /// RAM regions (guest-physical start, size) in address order.
    pub regions: Vec<(u64, u64)>,
    /// The VM's disks in order.
    pub disks: Vec<DiskInfo>,
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Source: the VM's shape.
    Hello(Hello),
    /// Source: pages of one round.
    Pages {
        /// Round number (0 = the full copy).
        round: u32,
        /// The pages.
        pages: Vec<Page>,
    },
    /// Source: contents of the disks that are copied, of one round.
    Disk {
        /// Round number (0 = what the guest wrote before tracking started).
        round: u32,
        /// The chunks.
        chunks: Vec<DiskChunk>,
    },
    /// Source (a firmware-booted VM, paused): the firmware's state.
    Firmware(FirmwareState),
    /// Source: the paused VM's sealed snapshot state (see `crate::snapshot`).
    State(Vec<u8>),
    /// Source: the migration was cancelled or failed; the source keeps the VM.
    Abort(String),
    /// Source: the VM is given up, the target runs it.
    Go,
    /// Target: layout accepted.
    Ready,
    /// Target: state applied, VM built.
    Ack,
    /// Target: refused or failed.
    Error(String),
}

const TAG_HELLO: u8 = 1;
const TAG_PAGES: u8 = 2;
const TAG_STATE: u8 = 3;
const TAG_ABORT: u8 = 4;
const TAG_GO: u8 = 5;
const TAG_DISK: u8 = 6;
const TAG_FIRMWARE: u8 = 7;
const TAG_READY: u8 = 16;
const TAG_ACK: u8 = 17;
const TAG_ERROR: u8 = 18;

impl Message {
    /// The message's name, for protocol errors.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "Hello",
            Message::Pages { .. } => "Pages",
            Message::Disk { .. } => "Disk",
            Message::Firmware(_) => "Firmware",
            Message::State(_) => "State",
            Message::Abort(_) => "Abort",
            Message::Go => "Go",
            Message::Ready => "Ready",
            Message::Ack => "Ack",
            Message::Error(_) => "Error",
        }
    }

    /// Appends the payload to `p`; returns the tag.
    fn append_payload(&self, p: &mut Vec<u8>) -> u8 {
        match self {
            Message::Hello(h) => {
                p.extend_from_slice(&h.vcpus.to_le_bytes());
                p.extend_from_slice(&h.memory_size.to_le_bytes());
                p.extend_from_slice(&(h.regions.len() as u32).to_le_bytes());
                for (gpa, size) in &h.regions {
                    p.extend_from_slice(&gpa.to_le_bytes());
                    p.extend_from_slice(&size.to_le_bytes());
                }
                append_disks(p, &h.disks);
                TAG_HELLO
            }
            Message::Pages { round, pages } => {
                p.reserve(8 + pages.len() * (8 + PAGE_SIZE));
                p.extend_from_slice(&round.to_le_bytes());
                p.extend_from_slice(&(pages.len() as u32).to_le_bytes());
                for page in pages {
                    match page {
                        Page::Zero(gpa) => p.extend_from_slice(&(gpa | ZERO_PAGE).to_le_bytes()),
                        Page::Data(gpa, data) => {
                            p.extend_from_slice(&gpa.to_le_bytes());
                            p.extend_from_slice(&data[..]);
                        }
                    }
                }
                TAG_PAGES
            }
            Message::Disk { round, chunks } => {
                append_chunks(p, *round, chunks);
                TAG_DISK
            }
            Message::Firmware(f) => {
                p.extend_from_slice(&f.encode());
                TAG_FIRMWARE
            }
            Message::State(s) => {
                p.extend_from_slice(s);
                TAG_STATE
            }
            Message::Abort(r) => {
                p.extend_from_slice(r.as_bytes());
                TAG_ABORT
            }
            Message::Go => TAG_GO,
            Message::Ready => TAG_READY,
            Message::Ack => TAG_ACK,
            Message::Error(r) => {
                p.extend_from_slice(r.as_bytes());
                TAG_ERROR
            }
        }
    }

    /// The message as one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// The message as one frame, in `out` (cleared first; its allocation is reused, so a
    /// sender of many 1 MiB frames does not fault fresh memory in for each).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[0u8; 5]);
        out[0] = self.append_payload(out);
        let len = (out.len() - 5) as u32;
        out[1..5].copy_from_slice(&len.to_le_bytes());
        let crc = crc32fast::hash(out);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// Parses a checked frame's payload.
    fn decode(tag: u8, payload: &[u8]) -> Result<Self, WireError> {
        let mut c = Cursor { buf: payload };
        let msg = match tag {
            TAG_HELLO => {
                let vcpus = c.u32("the Hello vCPU count")?;
                let memory_size = c.u64("the Hello RAM size")?;
                let n = c.u32("the Hello region count")?;
                if n > MAX_REGIONS {
                    return Err(WireError::Malformed(format!(
                        "Hello announces {n} RAM regions (at most {MAX_REGIONS})"
                    )));
                }
                let regions = (0..n)
                    .map(|_| Ok((c.u64("a Hello region")?, c.u64("a Hello region")?)))
                    .collect::<Result<_, WireError>>()?;
                let disks = decode_disks(&mut c)?;
                Message::Hello(Hello {
                    vcpus,
                    memory_size,
                    regions,
                    disks,
                })
            }
            TAG_DISK => {
                let (round, chunks) = decode_chunks(&mut c)?;
                Message::Disk { round, chunks }
            }
            TAG_PAGES => {
                let round = c.u32("the Pages round")?;
                let n = c.u32("the Pages count")? as usize;
                if n > PAGES_PER_FRAME {
                    return Err(WireError::Malformed(format!(
                        "a Pages frame announces {n} pages (at most {PAGES_PER_FRAME})"
                    )));
                }
                let mut pages = Vec::with_capacity(n);
                for _ in 0..n {
                    let addr = c.u64("a page address")?;
                    if addr & ZERO_PAGE != 0 {
                        pages.push(Page::Zero(addr & !ZERO_PAGE));
                    } else {
                        let mut data = Box::new([0u8; PAGE_SIZE]);
                        data.copy_from_slice(c.take(PAGE_SIZE, "a page's data")?);
                        pages.push(Page::Data(addr, data));
                    }
                }
                Message::Pages { round, pages }
            }
            TAG_FIRMWARE => Message::Firmware(
                FirmwareState::decode(c.take(payload.len(), "the firmware state")?)
                    .map_err(WireError::Malformed)?,
            ),
            TAG_STATE => Message::State(c.take(payload.len(), "the state")?.to_vec()),
            TAG_ABORT => Message::Abort(reason(&mut c)?),
            TAG_GO => Message::Go,
            TAG_READY => Message::Ready,
            TAG_ACK => Message::Ack,
            TAG_ERROR => Message::Error(reason(&mut c)?),
            other => return Err(WireError::UnknownTag(other)),
        };
        if !c.buf.is_empty() {
            return Err(WireError::Malformed(format!(
                "{} bytes after the end of a {} frame",
                c.buf.len(),
                msg.name()
            )));
        }
        Ok(msg)
    }
}

fn reason(c: &mut Cursor<'_>) -> Result<String, WireError> {
    let all = c.buf.len();
    Ok(String::from_utf8_lossy(c.take(all, "a reason")?).into_owned())
}

/// Reads a frame's payload front to back, checking lengths first.
pub(super) struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    #[cfg(test)]
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Malformed(format!(
                "the frame ends inside {what} ({} of {n} bytes)",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(b))
    }

    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }
}

/// Writes the preamble.
pub fn write_preamble(w: &mut impl Write) -> Result<(), WireError> {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&WIRE_VERSION.to_le_bytes());
    w.write_all(&p).map_err(io_err("write"))
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), WireError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            WireError::Truncated(what)
        } else {
            WireError::Io {
                op: "read",
                source: e,
            }
        }
    })
}

/// Reads and checks the preamble.
pub fn read_preamble(r: &mut impl Read) -> Result<(), WireError> {
    let mut p = [0u8; 12];
    read_exact(r, &mut p, "the preamble")?;
    if p[..8] != MAGIC {
        return Err(WireError::BadMagic(p[..8].to_vec()));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&p[8..]);
    let found = u32::from_le_bytes(v);
    if found != WIRE_VERSION {
        return Err(WireError::Version { found });
    }
    Ok(())
}

/// Writes `msg` as one frame; returns the bytes written.
pub fn write_message(w: &mut impl Write, msg: &Message) -> Result<u64, WireError> {
    write_message_with(w, msg, &mut Vec::new())
}

/// [`write_message`] through `buf`, whose allocation is reused from frame to frame.
pub fn write_message_with(
    w: &mut impl Write,
    msg: &Message,
    buf: &mut Vec<u8>,
) -> Result<u64, WireError> {
    msg.encode_into(buf);
    w.write_all(buf).map_err(io_err("write"))?;
    Ok(buf.len() as u64)
}

/// Reads one frame, checks its length and checksum and parses it.
pub fn read_message(r: &mut impl Read) -> Result<Message, WireError> {
    read_message_with(r, &mut Vec::new())
}

/// [`read_message`] through `payload`, whose allocation is reused from frame to frame.
pub fn read_message_with(r: &mut impl Read, payload: &mut Vec<u8>) -> Result<Message, WireError> {
    let mut head = [0u8; 5];
    read_exact(r, &mut head, "a frame header")?;
    let tag = head[0];
    let mut l = [0u8; 4];
    l.copy_from_slice(&head[1..]);
    let len = u32::from_le_bytes(l);
    if len > MAX_PAYLOAD {
        return Err(WireError::FrameTooLarge(len));
    }
    payload.clear();
    payload.resize(len as usize, 0);
    read_exact(r, payload, "a frame's payload")?;
    let mut c = [0u8; 4];
    read_exact(r, &mut c, "a frame's checksum")?;
    let stored = u32::from_le_bytes(c);
    let mut h = crc32fast::Hasher::new();
    h.update(&head);
    h.update(payload);
    let computed = h.finalize();
    if stored != computed {
        return Err(WireError::Checksum { stored, computed });
    }
    Message::decode(tag, payload)
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
