//! Standalone mode's keyboard: what is typed on the launcher's stdin goes to the guest's serial
//! console, as `virtctl console` would send it.

use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A terminal switched to character mode (no line buffering, no local echo: the guest echoes);
/// signals stay on, so Ctrl-C still reaches the launcher. Restored on drop.
pub struct CharacterMode {
    fd: i32,
    saved: libc::termios,
}

impl std::fmt::Debug for CharacterMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CharacterMode")
            .field("fd", &self.fd)
            .finish()
    }
}

impl CharacterMode {
    /// Switches `fd` if it is a terminal; `None` if it is not (a pipe, a file).
    pub fn enter(fd: BorrowedFd<'_>) -> Option<CharacterMode> {
        let fd = fd.as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it or fails on a non-terminal.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open for the borrow and `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // SAFETY: as above; `raw` is a valid termios derived from the terminal's own.
        (unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } == 0)
            .then_some(CharacterMode { fd, saved })
    }
}

impl Drop for CharacterMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from the same descriptor in `enter`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// Copies `input` to `sink` on a background thread until end of file or an error.
pub fn forward(
    mut input: impl Read + Send + 'static,
    sink: crate::console::InputSink,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink(&buf[..n]);
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    #[test]
    fn a_pipe_is_not_a_terminal_and_its_bytes_are_forwarded() {
        let (r, mut w) = std::io::pipe().unwrap();
        use std::os::fd::AsFd;
        assert!(CharacterMode::enter(r.as_fd()).is_none());
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        forward(
            r,
            Arc::new(move |b: &[u8]| sink.lock().unwrap().extend_from_slice(b)),
        )
        .unwrap();
        std::io::Write::write_all(&mut w, b"uname\r").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.lock().unwrap().len() < 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&got.lock().unwrap()[..], b"uname\r");
    }
}
