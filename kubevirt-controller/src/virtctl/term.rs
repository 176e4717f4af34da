//! The terminal in raw mode while a console is attached, restored on drop.

use std::os::fd::BorrowedFd;

use rustix::termios::{OptionalActions, Termios, isatty, tcgetattr, tcsetattr};

/// A terminal switched to raw mode; dropping it restores the mode it had.
#[derive(Debug)]
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Switches stdin to raw mode if it is a terminal (`None`: it is not).
    pub fn enter() -> std::io::Result<Option<RawMode>> {
        let stdin = stdin();
        if !isatty(stdin) {
            return Ok(None);
        }
        let saved = tcgetattr(stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(stdin, OptionalActions::Now, &raw)?;
        Ok(Some(RawMode { saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(stdin(), OptionalActions::Now, &self.saved);
    }
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the whole process; it is only borrowed for termios calls.
    unsafe { BorrowedFd::borrow_raw(0) }
}
