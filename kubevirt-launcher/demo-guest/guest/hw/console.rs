//! COM1 (read when its receive interrupt says so, or polled), plus number formatting without `core::fmt` (which would triple the image).

const COM1: u16 = 0x3f8;
const IER: u16 = COM1 + 1;
const IER_RECEIVED_DATA: u8 = 1;
const LSR: u16 = COM1 + 5;
const LSR_DATA_READY: u8 = 1;
const LSR_THR_EMPTY: u8 = 0x20;

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
    loop {
        match super::inb(LSR) {
            ABSENT => return,
            lsr if lsr & LSR_THR_EMPTY != 0 => break,
            _ => core::hint::spin_loop(),
        }
    }
    super::outb(COM1, b);
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
