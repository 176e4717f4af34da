//! The remote end of OpenSSH's legacy scp protocol (`scp -O`, which `virtctl scp` passes: the
//! guest has no SFTP server), run by an `exec` of `scp -t TARGET` (files come in) or
//! `scp -f PATH` (a file goes out), on the guest's RAM file store ([`crate::files`]).
//!
//! The protocol: the receiving side sends one `\0` for every record it accepts (or `\x01`/`\x02`
//! and a message line to refuse); the sending side sends `C<mode> <size> <name>\n`, the bytes,
//! and a `\0`. `T` (times, `-p`) records are accepted and ignored; directories (`-r`) are refused.

use crate::files::{self, MAX_NAME};

/// What runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Sink: waiting for a record line.
    Header,
    /// Sink: `remaining` file bytes to come.
    Data,
    /// Sink: the `\0` after the bytes.
    DataEnd,
    /// Source: waiting for the sink's first `\0`.
    WaitStart,
    /// Source: waiting for the sink to accept the `C` record.
    WaitHeaderAck,
    /// Source: file bytes going out.
    Sending,
    /// Source: waiting for the sink's `\0` after the bytes.
    WaitDataAck,
    /// Over; `exit` says how.
    Done,
}

/// One scp transfer.
pub struct Scp {
    state: State,
    target: [u8; MAX_NAME],
    target_len: usize,
    line: [u8; 512],
    line_len: usize,
    slot: usize,
    remaining: usize,
    offset: usize,
    /// The exit status, once over.
    pub exit: Option<u32>,
}

impl Scp {
    /// The transfer `command` asks for: `None` if it is not `scp`, `Some(Err(msg))` if it is one
    /// this guest cannot do.
    pub fn parse(command: &[u8]) -> Option<Result<Scp, &'static str>> {
        let mut words = command.split(|&b| b == b' ').filter(|w| !w.is_empty());
        if words.next()? != b"scp" {
            return None;
        }
        let (mut sink, mut source, mut path) = (false, false, &b""[..]);
        for w in words {
            match w {
                b"-t" => sink = true,
                b"-f" => source = true,
                b"-r" => return Some(Err("scp: directories (-r) are not supported\n")),
                b"-p" | b"-d" | b"-v" | b"-q" | b"--" => {}
                _ if w.starts_with(b"-") => return Some(Err("scp: unknown option\n")),
                _ => path = w,
            }
        }
        if sink == source || path.len() > MAX_NAME {
            return Some(Err("usage: scp -t TARGET | scp -f PATH\n"));
        }
        let mut scp = Scp {
            state: if sink {
                State::Header
            } else {
                State::WaitStart
            },
            target: [0; MAX_NAME],
            target_len: path.len(),
            line: [0; 512],
            line_len: 0,
            slot: 0,
            remaining: 0,
            offset: 0,
            exit: None,
        };
        scp.target[..path.len()].copy_from_slice(path);
        Some(Ok(scp))
    }

    fn target(&self) -> &[u8] {
        &self.target[..self.target_len]
    }

    /// What goes out first: a sink's readiness.
    pub fn start(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.state == State::Header {
            out(b"\0");
        }
    }

    fn fail(&mut self, out: &mut dyn FnMut(&[u8]), message: &str) {
        out(b"\x02scp: ");
        out(message.as_bytes());
        out(b"\n");
        self.state = State::Done;
        self.exit = Some(1);
    }

    /// Takes bytes from the client; answers through `out`.
    pub fn input(&mut self, mut data: &[u8], out: &mut dyn FnMut(&[u8])) {
        while let [b, rest @ ..] = data {
            match self.state {
                State::Data => {
                    let n = self.remaining.min(data.len());
                    files::store().append(self.slot, &data[..n]);
                    self.remaining -= n;
                    data = &data[n..];
                    if self.remaining == 0 {
                        self.state = State::DataEnd;
                    }
                    continue;
                }
                State::DataEnd => {
                    if *b != 0 {
                        files::store().remove(self.slot);
                        return self.fail(out, "the client's transfer failed");
                    }
                    out(b"\0");
                    self.state = State::Header;
                }
                State::Header => {
                    if *b != b'\n' {
                        if self.line_len < self.line.len() {
                            self.line[self.line_len] = *b;
                            self.line_len += 1;
                        }
                    } else {
                        let line = self.line;
                        let n = self.line_len;
                        self.line_len = 0;
                        self.record(&line[..n], out);
                    }
                }
                State::WaitStart | State::WaitHeaderAck | State::WaitDataAck => {
                    if *b != 0 {
                        self.state = State::Done;
                        self.exit = Some(1);
                        return;
                    }
                    self.source_step(out);
                }
                State::Sending | State::Done => {}
            }
            data = rest;
        }
    }

    /// A sink's record line.
    fn record(&mut self, line: &[u8], out: &mut dyn FnMut(&[u8])) {
        match line.first() {
            Some(b'C') => {
                let mut f = line[1..].splitn(3, |&b| b == b' ');
                let (_mode, size, name) = (f.next(), f.next(), f.next().unwrap_or(b""));
                let Some(size) = size.and_then(parse_usize) else {
                    return self.fail(out, "malformed file record");
                };
                let target = self.target();
                let name = if target.is_empty()
                    || target == b"."
                    || target == b"~"
                    || target.ends_with(b"/")
                {
                    name
                } else {
                    target
                };
                let mut kept = [0u8; MAX_NAME];
                let n = name.len().min(MAX_NAME);
                kept[..n].copy_from_slice(&name[..n]);
                match files::store().create(&kept[..n], size) {
                    Ok(slot) => {
                        self.slot = slot;
                        self.remaining = size;
                        self.state = if size == 0 {
                            State::DataEnd
                        } else {
                            State::Data
                        };
                        out(b"\0");
                    }
                    Err(e) => self.fail(out, e.message()),
                }
            }
            Some(b'T') | Some(b'E') => out(b"\0"),
            Some(b'D') => self.fail(out, "directories are not supported"),
            // The client's own error: it gives up.
            _ => {
                self.state = State::Done;
                self.exit = Some(1);
            }
        }
    }

    /// A source's next step after the sink's `\0`.
    fn source_step(&mut self, out: &mut dyn FnMut(&[u8])) {
        match self.state {
            State::WaitStart => {
                let path = self.target();
                let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
                let store = files::store();
                let Some(slot) = store.find(path).or_else(|| store.find(base)) else {
                    out(b"\x01scp: ");
                    out(path);
                    out(b": No such file or directory\n");
                    self.state = State::Done;
                    self.exit = Some(1);
                    return;
                };
                let mut header = [0u8; 32];
                let mut n = write(&mut header, 0, b"C0644 ");
                n = write_usize(&mut header, n, store.file(slot).data().len());
                n = write(&mut header, n, b" ");
                out(&header[..n]);
                out(base);
                out(b"\n");
                self.slot = slot;
                self.offset = 0;
                self.state = State::WaitHeaderAck;
            }
            State::WaitHeaderAck => self.state = State::Sending,
            State::WaitDataAck => {
                self.state = State::Done;
                self.exit = Some(0);
            }
            _ => {}
        }
    }

    /// A source's file bytes still to send.
    pub fn outgoing(&self) -> &[u8] {
        if self.state != State::Sending {
            return &[];
        }
        &files::store().file(self.slot).data()[self.offset..]
    }

    /// `n` bytes of [`Scp::outgoing`] went out; after the last, the closing `\0`.
    pub fn sent(&mut self, n: usize, out: &mut dyn FnMut(&[u8])) {
        self.offset += n;
        if self.state == State::Sending && self.outgoing().is_empty() {
            out(b"\0");
            self.state = State::WaitDataAck;
        }
    }

    /// The client closed its side: a sink between files is done.
    pub fn eof(&mut self) {
        if self.exit.is_none() {
            self.exit = Some(if self.state == State::Header { 0 } else { 1 });
            self.state = State::Done;
        }
    }
}

fn parse_usize(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 12 {
        return None;
    }
    s.iter().try_fold(0usize, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + usize::from(c - b'0'))
    })
}

fn write(buf: &mut [u8], at: usize, s: &[u8]) -> usize {
    let n = s.len().min(buf.len() - at);
    buf[at..at + n].copy_from_slice(&s[..n]);
    at + n
}

fn write_usize(buf: &mut [u8], at: usize, v: usize) -> usize {
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
    write(buf, at, &digits[i..])
}
