//! Standalone mode's keyboard: what is typed on the launcher's stdin goes to the guest's serial
//! console, as `virtctl console` would send it.

use rustix::termios::{LocalModes, OptionalActions, SpecialCodeIndex, Termios};
use std::io::Read;
use std::os::fd::{BorrowedFd, OwnedFd};

/// A terminal switched to character mode (no line buffering, no local echo: the guest echoes);
/// signals stay on, so Ctrl-C still reaches the launcher. Restored on drop.
#[derive(Debug)]
pub struct CharacterMode {
    /// A duplicate of the terminal's descriptor, so the restore needs no borrow.
    terminal: OwnedFd,
    saved: Termios,
}

impl CharacterMode {
    /// Switches `fd` if it is a terminal; `None` if it is not (a pipe, a file).
    pub fn enter(fd: BorrowedFd<'_>) -> Option<CharacterMode> {
        let saved = rustix::termios::tcgetattr(fd).ok()?;
        let terminal = fd.try_clone_to_owned().ok()?;
        let mut raw = saved.clone();
        raw.local_modes
            .remove(LocalModes::ICANON | LocalModes::ECHO);
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        rustix::termios::tcsetattr(&terminal, OptionalActions::Now, &raw).ok()?;
        Some(CharacterMode { terminal, saved })
    }
}

impl Drop for CharacterMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(&self.terminal, OptionalActions::Now, &self.saved);
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
            crate::confine::enter(crate::confine::ThreadKind::Console);
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
    fn a_terminal_gets_character_mode_and_it_back_afterwards() {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        use std::os::fd::AsFd;
        let leader = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&leader).unwrap();
        unlockpt(&leader).unwrap();
        let name = ptsname(&leader, Vec::new()).unwrap();
        let follower = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap();
        let canonical = |f: &std::fs::File| {
            rustix::termios::tcgetattr(f.as_fd())
                .unwrap()
                .local_modes
                .contains(LocalModes::ICANON)
        };
        assert!(canonical(&follower), "a fresh terminal is line-buffered");
        let mode = CharacterMode::enter(follower.as_fd()).expect("a terminal");
        assert!(!canonical(&follower));
        let now = rustix::termios::tcgetattr(follower.as_fd()).unwrap();
        assert!(!now.local_modes.contains(LocalModes::ECHO));
        assert!(
            now.local_modes.contains(LocalModes::ISIG),
            "Ctrl-C still signals"
        );
        drop(mode);
        assert!(canonical(&follower), "restored on drop");
    }

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
