//! [`GuestAsm`]: iced-x86's code assembler plus the few idioms every test guest uses.

use iced_x86::IcedError;
use iced_x86::code_asm::{CodeAssembler, CodeLabel, al, dx, eax, rcx, rsi};

use super::{
    DEBUG_EXIT_PORT, GUEST_LOAD_ADDR, GUEST_MAX_CODE_SIZE, REPORT_PORT, SERIAL_PORT, TestGuest,
    TestGuestError,
};

/// Assembles a 64-bit test guest. Instructions go through [`GuestAsm::a`]; strings printed
/// with [`GuestAsm::print`] are placed after the code.
pub struct GuestAsm {
    name: &'static str,
    a: CodeAssembler,
    strings: Vec<(CodeLabel, Vec<u8>)>,
}

impl std::fmt::Debug for GuestAsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAsm")
            .field("name", &self.name)
            .field("instructions", &self.a.instructions().len())
            .finish()
    }
}

impl GuestAsm {
    /// A new program called `name`.
    pub fn new(name: &'static str) -> Result<Self, TestGuestError> {
        let a =
            CodeAssembler::new(64).map_err(|source| TestGuestError::Assemble { name, source })?;
        Ok(GuestAsm {
            name,
            a,
            strings: Vec::new(),
        })
    }

    fn err(&self) -> impl Fn(IcedError) -> TestGuestError + '_ {
        |source| TestGuestError::Assemble {
            name: self.name,
            source,
        }
    }

    /// The underlying assembler, to emit instructions.
    pub fn a(&mut self) -> &mut CodeAssembler {
        &mut self.a
    }

    /// Maps an assembler error to this program's error.
    pub fn check<T>(&self, r: Result<T, IcedError>) -> Result<T, TestGuestError> {
        r.map_err(self.err())
    }

    /// Prints `text` on COM1, one `out` per byte. Clobbers RSI, RCX, RDX, RAX.
    pub fn print(&mut self, text: &[u8]) -> Result<(), TestGuestError> {
        if text.is_empty() {
            return Ok(());
        }
        let label = self.a.create_label();
        let r = (|| {
            let a = &mut self.a;
            a.lea(rsi, iced_x86::code_asm::ptr(label))?;
            a.mov(rcx, text.len() as u64)?;
            a.mov(dx, u32::from(SERIAL_PORT))?;
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.lodsb()?;
            a.out(dx, al)?;
            a.dec(rcx)?;
            a.jnz(top)
        })();
        self.check(r)?;
        self.strings.push((label, text.to_vec()));
        Ok(())
    }

    /// Sends EAX to [`REPORT_PORT`] (a 4-byte `out`). Clobbers RDX.
    pub fn report_eax(&mut self) -> Result<(), TestGuestError> {
        let r = (|| {
            self.a.mov(dx, u32::from(REPORT_PORT))?;
            self.a.out(dx, eax)
        })();
        self.check(r)
    }

    /// Ends the VM with `code` through the debug-exit port, then spins should the write return.
    pub fn exit(&mut self, code: u8) -> Result<(), TestGuestError> {
        let r = (|| {
            let a = &mut self.a;
            a.mov(dx, u32::from(DEBUG_EXIT_PORT))?;
            a.mov(al, u32::from(code))?;
            a.out(dx, al)?;
            let mut spin = a.create_label();
            a.set_label(&mut spin)?;
            a.pause()?;
            a.jmp(spin)
        })();
        self.check(r)
    }

    /// Assembles the program at [`GUEST_LOAD_ADDR`], entry at its first instruction.
    pub fn finish(mut self) -> Result<TestGuest, TestGuestError> {
        let strings = std::mem::take(&mut self.strings);
        for (mut label, bytes) in strings {
            let r = self
                .a
                .set_label(&mut label)
                .and_then(|()| self.a.db(&bytes));
            self.check(r)?;
        }
        let r = self.a.assemble(GUEST_LOAD_ADDR);
        let code = self.check(r)?;
        if code.len() > GUEST_MAX_CODE_SIZE {
            return Err(TestGuestError::TooLarge {
                name: self.name,
                size: code.len(),
            });
        }
        Ok(TestGuest {
            name: self.name,
            code,
            entry: GUEST_LOAD_ADDR,
            privilege: crate::Privilege::User,
        })
    }
}
