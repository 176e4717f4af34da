//! The SSH server on port 22: the `sunset` crate (no_std, no alloc) speaks the protocol —
//! curve25519 key exchange, an ed25519 host key made at boot from RDRAND, chacha20-poly1305 or
//! aes256-ctr with hmac-sha256 — over the TCP connection of [`crate::inet::conn`]. Public-key
//! authentication only, against the keys cloud-init gave ([`keys`]); passwords are refused.
//! One session channel per connection: `exec` runs one console command and returns its output
//! and exit status (or, for `scp -t`/`scp -f`, a file transfer: [`scp`]); `shell` (with or
//! without a pty) runs the console's shell on the channel.

pub mod keys;
pub mod scp;

use core::sync::atomic::{AtomicBool, Ordering};

use sunset::{ChanData, ChanFail, ChanHandle, Event, KeyType, PubKey, Runner, ServEvent, SignKey};

use crate::System;
use crate::hw::console;
use crate::shell::{Action, Shell};
use keys::AuthorizedKeys;
use scp::Scp;

/// sunset's packet buffers: each holds the largest packet either side sends (sunset offers a
/// 1000-byte channel window and packet size; key exchange packets are a few KiB).
const BUFFER: usize = 8 * 1024;
static mut INPUT: [u8; BUFFER] = [0; BUFFER];
static mut OUTPUT: [u8; BUFFER] = [0; BUFFER];
/// Whether a [`Session`] holds the buffers.
static BUFFERS_TAKEN: AtomicBool = AtomicBool::new(false);

/// The most command output waiting for the channel.
const PENDING: usize = console::CAPTURE;
/// The longest command line.
const COMMAND: usize = 256;

/// The server: its host key and the keys it accepts, and the session of the current
/// connection.
pub struct Server {
    hostkey: SignKey,
    keys: AuthorizedKeys,
    session: Option<Session>,
}

/// What a session is running on its channel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Idle,
    Exec,
    Shell,
    Scp,
}

/// One connection's SSH state.
struct Session {
    runner: Runner<'static, sunset::Server>,
    generation: u32,
    chan: Option<ChanHandle>,
    mode: Mode,
    pty: bool,
    shell: Shell,
    scp: Option<Scp>,
    command: [u8; COMMAND],
    command_len: usize,
    pending: [u8; PENDING],
    pending_len: usize,
    /// The exit status to send once `pending` is written.
    exit: Option<u32>,
    closed: bool,
}

impl Drop for Session {
    fn drop(&mut self) {
        BUFFERS_TAKEN.store(false, Ordering::Release);
    }
}

impl Session {
    fn new(generation: u32) -> Option<Session> {
        if BUFFERS_TAKEN.swap(true, Ordering::Acquire) {
            return None;
        }
        // SAFETY: BUFFERS_TAKEN was false, so no other Session (hence no Runner) borrows the
        // buffers; this one gives them back when dropped.
        let (input, output) = unsafe { (&mut *&raw mut INPUT, &mut *&raw mut OUTPUT) };
        Some(Session {
            runner: Runner::new_server(input, output),
            generation,
            chan: None,
            mode: Mode::Idle,
            pty: false,
            shell: Shell::new(),
            scp: None,
            command: [0; COMMAND],
            command_len: 0,
            pending: [0; PENDING],
            pending_len: 0,
            exit: None,
            closed: false,
        })
    }
}

/// Appends `out` to a session's pending output (what does not fit is dropped).
fn queue(pending: &mut [u8; PENDING], len: &mut usize, out: &[u8]) {
    let n = out.len().min(PENDING - *len);
    pending[*len..*len + n].copy_from_slice(&out[..n]);
    *len += n;
}

/// What an event asks of [`Server::pump`] once the event is answered.
enum Next {
    Progressed,
    Idle,
    RunCommand,
    StartShell,
    StartScp,
    Defunct,
}

impl Server {
    /// A server with a fresh ed25519 host key, accepting `keys`; `None` without randomness.
    pub fn new(keys: AuthorizedKeys) -> Option<Server> {
        if !crate::hw::random::available() {
            return None;
        }
        let hostkey = SignKey::generate(KeyType::Ed25519, None).ok()?;
        Some(Server {
            hostkey,
            keys,
            session: None,
        })
    }

    /// Prints the host key as an `authorized_keys`/`known_hosts` line.
    pub fn report(&self) {
        console::str("ssh: serving port 22, host key ssh-ed25519 ");
        if let PubKey::Ed25519(k) = self.hostkey.pubkey() {
            let mut blob = [0u8; 51];
            blob[..4].copy_from_slice(&11u32.to_be_bytes());
            blob[4..15].copy_from_slice(b"ssh-ed25519");
            blob[15..19].copy_from_slice(&32u32.to_be_bytes());
            blob[19..].copy_from_slice(&k.key.0);
            let mut text = [0u8; 68];
            let n = keys::encode(&blob, &mut text);
            console::text(&text[..n]);
        }
        console::str(", ");
        console::dec(self.keys.len() as u64);
        console::str(" authorized key(s)");
        if self.keys.skipped > 0 {
            console::str(", ");
            console::dec(self.keys.skipped as u64);
            console::str(" skipped (only ssh-ed25519 keys are supported)");
        }
        console::str("\n");
    }

    /// Moves the connection's bytes through the SSH session and runs what it asks for.
    pub fn pump(&mut self, sys: &mut System) {
        let Some(conn) = sys.host.as_ref().map(|h| &h.ssh) else {
            return;
        };
        if !conn.is_established() {
            self.session = None;
            return;
        }
        let generation = conn.generation;
        if self
            .session
            .as_ref()
            .is_none_or(|s| s.generation != generation)
        {
            self.session = None;
            self.session = Session::new(generation);
        }
        let Some(s) = self.session.as_mut() else {
            return;
        };
        for _ in 0..256 {
            let mut busy = false;
            let Some(host) = sys.host.as_mut() else {
                return;
            };
            let conn = &mut host.ssh;
            // Network → sunset.
            if !conn.received().is_empty() {
                match s.runner.input(conn.received()) {
                    Ok(n) => {
                        conn.consume(n);
                        busy |= n > 0;
                    }
                    Err(_) => s.closed = true,
                }
            }
            let next = if s.closed {
                Next::Defunct
            } else {
                event(s, &self.hostkey, &self.keys)
            };
            match next {
                Next::Idle => {}
                Next::Progressed => busy = true,
                Next::Defunct => s.closed = true,
                Next::RunCommand => {
                    console::capture_start(s.pty);
                    let (action, status) = s.shell.execute(&s.command[..s.command_len], sys);
                    console::capture_end(&mut |out| queue(&mut s.pending, &mut s.pending_len, out));
                    s.exit = Some(status);
                    perform(action, sys);
                    busy = true;
                }
                Next::StartScp => {
                    if let Some(scp) = s.scp.as_mut() {
                        scp.start(&mut |out| queue(&mut s.pending, &mut s.pending_len, out));
                    }
                    busy = true;
                }
                Next::StartShell => {
                    console::capture_start(true);
                    console::str(
                        "kubevirt-rs demo guest: the console's shell (exit or Ctrl-D leaves)\n",
                    );
                    s.shell.prompt(sys);
                    console::capture_end(&mut |out| queue(&mut s.pending, &mut s.pending_len, out));
                    busy = true;
                }
            }
            busy |= channel(s, sys);
            // sunset → network.
            let Some(host) = sys.host.as_mut() else {
                return;
            };
            let conn = &mut host.ssh;
            loop {
                let out = s.runner.output_buf();
                if out.is_empty() || conn.send_space() == 0 {
                    break;
                }
                let n = conn.send(out);
                s.runner.consume_output(n);
                busy = true;
            }
            if s.closed {
                conn.close();
                break;
            }
            if !busy {
                break;
            }
        }
        if let Some(h) = sys.host.as_mut() {
            if h.ssh.peer_closed() {
                h.ssh.close();
            }
            h.flush();
        }
    }
}

/// Runs a command's request to power off or reboot (the session ends with the machine).
fn perform(action: Action, sys: &mut System) {
    match action {
        Action::PowerOff => sys.power_off(),
        Action::Reboot => sys.reboot(),
        Action::Continue | Action::Exit => {}
    }
}

/// Channel data both ways: typed bytes into the shell, pending output out, then the exit
/// status and close. Returns whether anything moved.
fn channel(s: &mut Session, sys: &mut System) -> bool {
    let Some(chan) = s.chan.as_ref() else {
        return false;
    };
    let mut busy = false;
    if s.mode == Mode::Shell && s.exit.is_none() {
        let mut typed = [0u8; 512];
        match s.runner.read_channel(chan, ChanData::Normal, &mut typed) {
            Ok(n) if n > 0 => {
                busy = true;
                console::capture_start(true);
                let mut action = Action::Continue;
                for &b in &typed[..n] {
                    action = s.shell.feed(b, sys);
                    if !matches!(action, Action::Continue) {
                        break;
                    }
                }
                console::capture_end(&mut |out| queue(&mut s.pending, &mut s.pending_len, out));
                if matches!(action, Action::Exit) {
                    s.exit = Some(0);
                }
                perform(action, sys);
            }
            Ok(_) => {}
            Err(_) => s.exit = Some(0),
        }
    }
    if s.mode == Mode::Scp
        && s.exit.is_none()
        && let Some(scp) = s.scp.as_mut()
    {
        let mut data = [0u8; 1024];
        let (pending, pending_len) = (&mut s.pending, &mut s.pending_len);
        match s.runner.read_channel(chan, ChanData::Normal, &mut data) {
            Ok(n) if n > 0 => {
                scp.input(&data[..n], &mut |out| queue(pending, pending_len, out));
                busy = true;
            }
            Ok(_) => {}
            Err(_) => scp.eof(),
        }
        if *pending_len == 0 {
            let out = scp.outgoing();
            if !out.is_empty()
                && let Ok(n) = s.runner.write_channel(chan, ChanData::Normal, out)
                && n > 0
            {
                scp.sent(n, &mut |out| queue(pending, pending_len, out));
                busy = true;
            }
        }
        if scp.exit.is_some() {
            s.exit = scp.exit;
        }
    }
    if s.pending_len > 0 {
        match s
            .runner
            .write_channel(chan, ChanData::Normal, &s.pending[..s.pending_len])
        {
            Ok(n) if n > 0 => {
                s.pending.copy_within(n..s.pending_len, 0);
                s.pending_len -= n;
                busy = true;
            }
            Ok(_) => {}
            Err(_) => s.pending_len = 0,
        }
    }
    if s.pending_len == 0
        && let Some(status) = s.exit
    {
        let chan = s.chan.take();
        if let Some(chan) = chan {
            let _ = s.runner.close_session(&chan, status);
            let _ = s.runner.channel_done(chan);
        }
        s.mode = Mode::Idle;
        busy = true;
    }
    busy
}

/// Takes sunset's next event and answers it.
fn event(s: &mut Session, hostkey: &SignKey, keys: &AuthorizedKeys) -> Next {
    let ev = match s.runner.progress() {
        Ok(ev) => ev,
        Err(_) => return Next::Defunct,
    };
    let ev = match ev {
        Event::Serv(ev) => ev,
        Event::Progressed => return Next::Progressed,
        Event::None | Event::Cli(_) => return Next::Idle,
    };
    let answered = match ev {
        ServEvent::Hostkeys(h) => h.hostkeys(&[hostkey]),
        ServEvent::FirstAuth(mut a) => a.set_auth_methods(false, true).and_then(|()| a.reject()),
        ServEvent::PasswordAuth(a) => a.reject(),
        ServEvent::PubkeyAuth(a) => {
            let known = matches!(a.pubkey(), Ok(PubKey::Ed25519(k)) if keys.contains(&k.key.0));
            if known { a.allow() } else { a.reject() }
        }
        ServEvent::Authenticated => Ok(()),
        ServEvent::OpenSession(o) => {
            if s.chan.is_some() {
                o.reject(ChanFail::SSH_OPEN_ADMINISTRATIVELY_PROHIBITED)
            } else {
                o.accept().map(|c| s.chan = Some(c))
            }
        }
        ServEvent::SessionPty(p) => {
            s.pty = true;
            p.succeed()
        }
        ServEvent::SessionEnv(e) => e.fail(),
        ServEvent::SessionShell(r) => {
            if s.mode != Mode::Idle {
                return r.fail().map_or(Next::Defunct, |()| Next::Progressed);
            }
            s.mode = Mode::Shell;
            return r.succeed().map_or(Next::Defunct, |()| Next::StartShell);
        }
        ServEvent::SessionExec(r) => {
            let command = r.command().map(str::as_bytes).unwrap_or(b"");
            if s.mode != Mode::Idle || command.len() > COMMAND {
                return r.fail().map_or(Next::Defunct, |()| Next::Progressed);
            }
            let next = match Scp::parse(command) {
                Some(Ok(scp)) => {
                    s.scp = Some(scp);
                    s.mode = Mode::Scp;
                    Next::StartScp
                }
                Some(Err(message)) => {
                    queue(&mut s.pending, &mut s.pending_len, message.as_bytes());
                    s.exit = Some(1);
                    s.mode = Mode::Exec;
                    Next::Progressed
                }
                None => {
                    s.command[..command.len()].copy_from_slice(command);
                    s.command_len = command.len();
                    s.mode = Mode::Exec;
                    Next::RunCommand
                }
            };
            return r.succeed().map_or(Next::Defunct, |()| next);
        }
        ServEvent::SessionSubsystem(r) => r.fail(),
        ServEvent::Defunct => return Next::Defunct,
        ServEvent::PollAgain => return Next::Progressed,
    };
    match answered {
        Ok(()) => Next::Progressed,
        Err(_) => Next::Defunct,
    }
}
