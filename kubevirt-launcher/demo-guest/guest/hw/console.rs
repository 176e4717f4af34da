//! COM1 (read when its receive interrupt says so, or polled), plus number formatting without `core::fmt` (which would triple the image).
//!
//! Writing uses the 16550A's transmit FIFO as Linux's 8250 driver does: once the line status
//! says the transmitter is empty, 16 bytes go out before the status is read again. Every UART
//! register access is an exit to the VMM, so a boot's ~500 bytes of output cost ~530 exits
//! instead of ~1,000 (a 16450 without FIFO, or one that says so, gets a byte per status read).

const COM1: u16 = 0x3f8;
const IER: u16 = COM1 + 1;
const IER_RECEIVED_DATA: u8 = 1;
const LSR: u16 = COM1 + 5;
const LSR_DATA_READY: u8 = 1;
const LSR_THR_EMPTY: u8 = 0x20;
/// FIFO control (written) and interrupt identification (read) share an offset.
const FCR: u16 = COM1 + 2;
const IIR: u16 = COM1 + 2;
/// Enable both FIFOs and clear them.
const FCR_ENABLE_AND_CLEAR: u8 = 0x07;
/// Both set: the FIFOs are enabled (a 16550A).
const IIR_FIFOS_ENABLED: u8 = 0xc0;
/// A 16550A's transmit FIFO.
const TX_FIFO: u8 = 16;

/// What the transmitter takes before the line status must be read again.
struct Tx {
    /// Bytes written without a status read when the transmitter is empty (0: not probed yet).
    burst: u8,
    /// Bytes it takes now.
    room: u8,
}

static mut TX: Tx = Tx { burst: 0, room: 0 };

fn tx() -> &'static mut Tx {
    // SAFETY: as for `capture`: one thread, interrupt handlers never print, every borrow ends
    // before the next call here.
    unsafe { &mut *&raw mut TX }
}

/// Turns the FIFOs on and says how many bytes an empty transmitter takes.
fn probe_fifo() -> u8 {
    super::outb(FCR, FCR_ENABLE_AND_CLEAR);
    match super::inb(IIR) {
        ABSENT => 1,
        iir if iir & IIR_FIFOS_ENABLED == IIR_FIFOS_ENABLED => TX_FIFO,
        _ => 1,
    }
}

/// Writes `s`, turning `\n` into `\r\n` (unless captured without a terminal).
pub fn write(s: &[u8]) {
    for &b in s {
        if b == b'\n' && capture_crlf() {
            put(b'\r');
        }
        put(b);
    }
}

/// Output captured instead of written to COM1: what a command run by the SSH server prints.
struct Capture {
    on: bool,
    crlf: bool,
    len: usize,
    buf: [u8; CAPTURE],
}

/// The most output one capture keeps (the rest is dropped).
pub const CAPTURE: usize = 16 * 1024;

static mut CAPTURED: Capture = Capture {
    on: false,
    crlf: true,
    len: 0,
    buf: [0; CAPTURE],
};

fn capture() -> &'static mut Capture {
    // SAFETY: the guest runs one thread and interrupt handlers never print; every borrow ends
    // before the next call here.
    unsafe { &mut *&raw mut CAPTURED }
}

fn capture_crlf() -> bool {
    let c = capture();
    !c.on || c.crlf
}

/// Starts capturing output; `crlf`: whether `\n` becomes `\r\n` (a terminal's session).
pub fn capture_start(crlf: bool) {
    let c = capture();
    c.on = true;
    c.crlf = crlf;
    c.len = 0;
}

/// How many more bytes a capture keeps (`None`: not capturing, output goes to COM1).
pub fn capture_room() -> Option<usize> {
    let c = capture();
    c.on.then(|| CAPTURE - c.len)
}

/// Stops capturing and hands what was captured to `f`.
pub fn capture_end(f: &mut dyn FnMut(&[u8])) {
    let c = capture();
    c.on = false;
    f(&c.buf[..c.len]);
    c.len = 0;
}

/// Writes `s`.
pub fn str(s: &str) {
    write(s.as_bytes());
}

/// An absent UART reads as all ones (no device decodes the port), as on real hardware; the
/// VMI then has `autoattachSerialConsole: false`.
const ABSENT: u8 = 0xff;

/// Writes one byte as it is.
pub fn put(b: u8) {
    let c = capture();
    if c.on {
        if c.len < CAPTURE {
            c.buf[c.len] = b;
            c.len += 1;
        }
        return;
    }
    let tx = tx();
    if tx.burst == 0 {
        tx.burst = probe_fifo();
    }
    if tx.room == 0 {
        loop {
            match super::inb(LSR) {
                ABSENT => return,
                lsr if lsr & LSR_THR_EMPTY != 0 => break,
                _ => core::hint::spin_loop(),
            }
        }
        tx.room = tx.burst;
    }
    super::outb(COM1, b);
    tx.room -= 1;
}

/// A byte typed on the console, if any (never, without a UART).
pub fn read() -> Option<u8> {
    let lsr = super::inb(LSR);
    (lsr != ABSENT && lsr & LSR_DATA_READY != 0).then(|| super::inb(COM1))
}

/// Makes COM1 interrupt (IRQ 4) when a byte arrives.
pub fn enable_receive_interrupt() {
    if super::inb(LSR) != ABSENT {
        super::outb(IER, IER_RECEIVED_DATA);
    }
}

/// `v` in decimal.
pub fn dec(mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    write(&buf[i..]);
}

/// `v` as two hex digits.
pub fn hex8(v: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    put(DIGITS[usize::from(v >> 4)]);
    put(DIGITS[usize::from(v & 15)]);
}

/// A dotted IPv4 address.
pub fn ip(a: [u8; 4]) {
    for (i, b) in a.iter().enumerate() {
        if i > 0 {
            put(b'.');
        }
        dec(u64::from(*b));
    }
}

/// A colon-separated MAC address.
pub fn mac(m: [u8; 6]) {
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            put(b':');
        }
        hex8(*b);
    }
}

/// Printable bytes as they are, others as `?`; newlines kept.
pub fn text(s: &[u8]) {
    for &b in s {
        match b {
            b'\n' => write(b"\n"),
            b'\t' | 0x20..=0x7e => put(b),
            _ => put(b'?'),
        }
    }
}

/// A UUID in its canonical form.
pub fn uuid(u: [u8; 16]) {
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            put(b'-');
        }
        hex8(*b);
    }
}
