//! A guest that runs a list of accesses the host wrote into its memory: memory and MMIO
//! writes and reads, port I/O, and polls. It lets a test play a driver step by step from the
//! guest itself (every access a real exit, or a real store into RAM the devices then read),
//! without writing each scenario in assembly.
//!
//! Build the list with [`Script`] and write [`Script::bytes`] at [`SCRIPT_ADDR`] before
//! starting the VM. Each read and poll reports the low 32 bits of the value it got on
//! [`super::REPORT_PORT`] (one 4-byte `out`); the guest exits 0 through the debug-exit port
//! after the last operation. A poll spins until the value matches, so a test bounds the run
//! with its own timeout.

use iced_x86::code_asm::{
    CodeAssembler, al, ax, byte_ptr, dword_ptr, dx, eax, ecx, edi, qword_ptr, r8, r9, r10, rax,
    rbx, rsi, word_ptr,
};

use super::{GuestAsm, TestGuest, TestGuestError};

/// Where the host writes the operations (256 KiB below 4 MiB, clear of the program, its data
/// page and its stack).
pub const SCRIPT_ADDR: u64 = 0x30_0000;
/// Bytes available for the operations.
pub const SCRIPT_SIZE: u64 = 0x4_0000;
/// Bytes per operation.
const OP_SIZE: u64 = 32;

const END: u64 = 0;
const WRITE: u64 = 1;
const READ: u64 = 2;
const OUT: u64 = 3;
const IN: u64 = 4;
const POLL: u64 = 5;

/// The width of an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 1 byte.
    Byte = 1,
    /// 2 bytes.
    Word = 2,
    /// 4 bytes.
    Dword = 4,
    /// 8 bytes (memory only; a port access of this width is done as 4 bytes).
    Qword = 8,
}

/// The operations, in order.
#[derive(Clone, Debug, Default)]
pub struct Script {
    ops: Vec<[u64; 4]>,
    reports: usize,
}

impl Script {
    /// An empty script (it only exits).
    pub fn new() -> Self {
        Script::default()
    }

    fn op(&mut self, kind: u64, width: Width, addr: u64, value: u64, mask: u64) -> &mut Self {
        self.ops
            .push([kind | (width as u64) << 8, addr, value, mask]);
        self
    }

    /// Stores `value` at guest-physical `addr` (RAM or MMIO).
    pub fn write(&mut self, addr: u64, width: Width, value: u64) -> &mut Self {
        self.op(WRITE, width, addr, value, 0)
    }

    /// Stores `bytes` at `addr`, eight at a time, the rest one by one.
    pub fn write_bytes(&mut self, addr: u64, bytes: &[u8]) -> &mut Self {
        let mut chunks = bytes.chunks_exact(8);
        let mut at = addr;
        for c in &mut chunks {
            let mut v = [0u8; 8];
            v.copy_from_slice(c);
            self.write(at, Width::Qword, u64::from_le_bytes(v));
            at += 8;
        }
        for &b in chunks.remainder() {
            self.write(at, Width::Byte, u64::from(b));
            at += 1;
        }
        self
    }

    /// Loads from `addr` and reports the value.
    pub fn read(&mut self, addr: u64, width: Width) -> &mut Self {
        self.reports += 1;
        self.op(READ, width, addr, 0, 0)
    }

    /// Writes `value` to `port`.
    pub fn out(&mut self, port: u16, width: Width, value: u32) -> &mut Self {
        self.op(OUT, width, u64::from(port), u64::from(value), 0)
    }

    /// Reads `port` and reports the value.
    pub fn input(&mut self, port: u16, width: Width) -> &mut Self {
        self.reports += 1;
        self.op(IN, width, u64::from(port), 0, 0)
    }

    /// Loads from `addr` (1, 2 or 4 bytes: a quadword is loaded as 4) until
    /// `value & mask == expected`, then reports the value.
    pub fn poll(&mut self, addr: u64, width: Width, mask: u32, expected: u32) -> &mut Self {
        let width = if width == Width::Qword {
            Width::Dword
        } else {
            width
        };
        self.reports += 1;
        self.op(POLL, width, addr, u64::from(expected), u64::from(mask))
    }

    /// How many values the script reports.
    pub fn reports(&self) -> usize {
        self.reports
    }

    /// The operations as the guest reads them, the final exit included.
    ///
    /// # Errors
    /// A message when they do not fit [`SCRIPT_SIZE`].
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity((self.ops.len() + 1) * OP_SIZE as usize);
        for op in self.ops.iter().chain(std::iter::once(&[END, 0, 0, 0])) {
            for v in op {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        if out.len() as u64 > SCRIPT_SIZE {
            return Err(format!(
                "the script has {} operations; at most {} fit",
                self.ops.len(),
                SCRIPT_SIZE / OP_SIZE - 1
            ));
        }
        Ok(out)
    }
}

/// The guest that runs the script at [`SCRIPT_ADDR`].
pub fn script() -> Result<TestGuest, TestGuestError> {
    let mut g = GuestAsm::new("script")?;
    let r = (|| {
        let a = g.a();
        // rsi: the next operation; edi: its kind, ecx: its width, rbx: address, rax: value,
        // r9: mask, r8: expected.
        a.mov(rsi, SCRIPT_ADDR)?;
        let mut top = a.create_label();
        let mut end = a.create_label();
        let mut report = a.create_label();
        a.set_label(&mut top)?;
        a.mov(rax, qword_ptr(rsi))?;
        a.movzx(ecx, ax)?;
        a.shr(ecx, 8)?;
        a.movzx(edi, al)?;
        a.mov(rbx, qword_ptr(rsi + 8))?;
        a.mov(r8, qword_ptr(rsi + 16))?;
        a.mov(r9, qword_ptr(rsi + 24))?;
        a.add(rsi, OP_SIZE as i32)?;
        a.mov(rax, r8)?;
        let (mut write, mut read, mut out, mut input, mut poll) = (
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        );
        for (kind, label) in [
            (WRITE, write),
            (READ, read),
            (OUT, out),
            (IN, input),
            (POLL, poll),
        ] {
            a.cmp(edi, kind as u32)?;
            a.je(label)?;
        }
        a.jmp(end)?;

        // Dispatches on ecx to four labels (1, 2, 4, anything else).
        let by_width = |a: &mut CodeAssembler, w1, w2, w4, w8| -> Result<(), iced_x86::IcedError> {
            a.cmp(ecx, 1)?;
            a.je(w1)?;
            a.cmp(ecx, 2)?;
            a.je(w2)?;
            a.cmp(ecx, 4)?;
            a.je(w4)?;
            a.jmp(w8)
        };

        a.set_label(&mut write)?;
        let (mut w1, mut w2, mut w4, mut w8) = (
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        );
        by_width(a, w1, w2, w4, w8)?;
        a.set_label(&mut w1)?;
        a.mov(byte_ptr(rbx), al)?;
        a.jmp(top)?;
        a.set_label(&mut w2)?;
        a.mov(word_ptr(rbx), ax)?;
        a.jmp(top)?;
        a.set_label(&mut w4)?;
        a.mov(dword_ptr(rbx), eax)?;
        a.jmp(top)?;
        a.set_label(&mut w8)?;
        a.mov(qword_ptr(rbx), rax)?;
        a.jmp(top)?;

        a.set_label(&mut read)?;
        let (mut r1, mut r2, mut r4, mut r8l) = (
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        );
        by_width(a, r1, r2, r4, r8l)?;
        a.set_label(&mut r1)?;
        a.movzx(eax, byte_ptr(rbx))?;
        a.jmp(report)?;
        a.set_label(&mut r2)?;
        a.movzx(eax, word_ptr(rbx))?;
        a.jmp(report)?;
        a.set_label(&mut r4)?;
        a.mov(eax, dword_ptr(rbx))?;
        a.jmp(report)?;
        a.set_label(&mut r8l)?;
        a.mov(rax, qword_ptr(rbx))?;
        a.jmp(report)?;

        a.set_label(&mut out)?;
        a.mov(dx, iced_x86::code_asm::bx)?;
        let (mut o1, mut o2, mut o4) = (a.create_label(), a.create_label(), a.create_label());
        by_width(a, o1, o2, o4, o4)?;
        a.set_label(&mut o1)?;
        a.out(dx, al)?;
        a.jmp(top)?;
        a.set_label(&mut o2)?;
        a.out(dx, ax)?;
        a.jmp(top)?;
        a.set_label(&mut o4)?;
        a.out(dx, eax)?;
        a.jmp(top)?;

        a.set_label(&mut input)?;
        a.mov(dx, iced_x86::code_asm::bx)?;
        a.xor(eax, eax)?;
        let (mut i1, mut i2, mut i4) = (a.create_label(), a.create_label(), a.create_label());
        by_width(a, i1, i2, i4, i4)?;
        a.set_label(&mut i1)?;
        a.in_(al, dx)?;
        a.jmp(report)?;
        a.set_label(&mut i2)?;
        a.in_(ax, dx)?;
        a.jmp(report)?;
        a.set_label(&mut i4)?;
        a.in_(eax, dx)?;
        a.jmp(report)?;

        a.set_label(&mut poll)?;
        let (mut p1, mut p2, mut p4, mut check) = (
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        );
        by_width(a, p1, p2, p4, p4)?;
        a.set_label(&mut p1)?;
        a.movzx(eax, byte_ptr(rbx))?;
        a.jmp(check)?;
        a.set_label(&mut p2)?;
        a.movzx(eax, word_ptr(rbx))?;
        a.jmp(check)?;
        a.set_label(&mut p4)?;
        a.mov(eax, dword_ptr(rbx))?;
        a.set_label(&mut check)?;
        a.mov(r10, rax)?;
        a.and(r10, r9)?;
        a.cmp(r10, r8)?;
        a.je(report)?;
        a.pause()?;
        a.jmp(poll)?;

        a.set_label(&mut report)?;
        a.mov(dx, u32::from(super::REPORT_PORT))?;
        a.out(dx, eax)?;
        a.jmp(top)?;
        a.set_label(&mut end)
    })();
    g.check(r)?;
    g.exit(0)?;
    g.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_assembles_and_lays_out_operations_with_a_final_exit() {
        assert!(!script().unwrap().code.is_empty());
        let mut s = Script::new();
        s.write(0x1000, Width::Word, 7)
            .read(0x2000, Width::Byte)
            .poll(0x3000, Width::Qword, 0xff, 1)
            .write_bytes(0x4000, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(s.reports(), 2);
        let b = s.bytes().unwrap();
        // write, read, poll, one qword and one byte, end.
        assert_eq!(b.len(), 6 * 32);
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!((word(0), word(1), word(2)), (WRITE | 2 << 8, 0x1000, 7));
        assert_eq!(word(8), POLL | 4 << 8, "a quadword poll loads 4 bytes");
        assert_eq!((word(10), word(11)), (1, 0xff));
        assert_eq!(
            (word(12), word(14)),
            (WRITE | 8 << 8, 0x0807_0605_0403_0201)
        );
        assert_eq!((word(16), word(17), word(18)), (WRITE | 1 << 8, 0x4008, 9));
        assert_eq!(&b[5 * 32..], &[0u8; 32]);
        let mut big = Script::new();
        for _ in 0..SCRIPT_SIZE / 32 {
            big.write(0, Width::Byte, 0);
        }
        assert!(big.bytes().is_err());
    }
}
