//! The serial console's command line.

use crate::System;
use crate::hw::console;

const PROMPT: &str = "# ";
const LINE: usize = 80;

/// A line being typed.
pub struct Shell {
    line: [u8; LINE],
    len: usize,
    /// How often `count` ran since the guest booted: state that lives only in guest memory
    /// (a memory-state snapshot carries it over, a boot starts it at zero).
    count: u64,
}

/// What a command asks of the main loop.
pub enum Action {
    /// Keep going.
    Continue,
    /// Power off.
    PowerOff,
    /// Reset the machine.
    Reboot,
    /// End the session (`exit`; an SSH session closes, the console shows a new prompt).
    Exit,
}

impl Shell {
    /// An empty line.
    pub const fn new() -> Shell {
        Shell {
            line: [0; LINE],
            len: 0,
            count: 0,
        }
    }

    /// Shows the prompt with the host name.
    pub fn prompt(&self, sys: &System) {
        console::text(sys.hostname());
        console::str(PROMPT);
    }

    /// Takes one typed byte, echoing it; runs the line on Enter.
    pub fn feed(&mut self, b: u8, sys: &mut System) -> Action {
        match b {
            b'\r' | b'\n' => {
                console::str("\n");
                let line = self.line;
                let n = self.len;
                self.len = 0;
                let (action, _status) = self.execute(&line[..n], sys);
                if matches!(action, Action::Continue) {
                    self.prompt(sys);
                }
                action
            }
            // Ctrl-D on an empty line.
            0x04 if self.len == 0 => Action::Exit,
            0x08 | 0x7f if self.len > 0 => {
                self.len -= 1;
                console::write(b"\x08 \x08");
                Action::Continue
            }
            0x20..=0x7e if self.len < LINE => {
                self.line[self.len] = b;
                self.len += 1;
                console::put(b);
                Action::Continue
            }
            _ => Action::Continue,
        }
    }
}

impl Shell {
    /// Runs one command line; returns what it asks of the caller and its exit status (0, 1
    /// for a usage error, 127 for an unknown command), as a shell's `$?`.
    pub fn execute(&mut self, line: &[u8], sys: &mut System) -> (Action, u32) {
        let cmd = trim(line);
        if cmd == b"count" {
            self.count += 1;
            console::str("count ");
            console::dec(self.count);
            console::str("\n");
            return (Action::Continue, 0);
        }
        run(cmd, sys)
    }
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

fn run(cmd: &[u8], sys: &mut System) -> (Action, u32) {
    let mut status = 0;
    match cmd {
        b"" => {}
        b"help" => console::str(
            "commands: help uname hostname count disks disktest cat ls userdata ip echo exit reboot poweroff\n",
        ),
        b"uname" | b"uname -a" => {
            console::str("kubevirt-rs-demo ");
            console::text(sys.hostname());
            console::str(" 1.0 x86_64 (kubevirt-vmm, CPL 3)\n");
        }
        b"hostname" => {
            console::text(sys.hostname());
            console::str("\n");
        }
        b"disks" => sys.list_disks(),
        b"disktest" => sys.disk_test(),
        b"userdata" => match &sys.cloud_init {
            Some(ci) => crate::cloudinit::print_user_data(ci),
            None => console::str("no cloud-init data source\n"),
        },
        b"ip" => sys.show_ip(),
        [b'c', b'a', b't', b' ', rest @ ..] => {
            let mut words = rest.split(|&b| b == b' ').filter(|w| !w.is_empty());
            match (words.next(), words.next()) {
                (Some(disk), Some(path)) => sys.cat(disk, path),
                (Some(name), None) => status = cat_file(name),
                _ => {
                    console::str("usage: cat vdX PATH | cat FILE\n");
                    status = 1;
                }
            }
        }
        b"ls" => {
            for f in crate::files::store().list() {
                console::dec(f.data().len() as u64);
                console::put(b' ');
                console::text(f.name());
                console::str("\n");
            }
        }
        b"echo" => console::str("\n"),
        [b'e', b'c', b'h', b'o', b' ', rest @ ..] => {
            console::text(rest);
            console::str("\n");
        }
        b"exit" | b"logout" => return (Action::Exit, 0),
        b"poweroff" => return (Action::PowerOff, 0),
        b"reboot" => return (Action::Reboot, 0),
        _ => {
            console::text(cmd);
            console::str(": command not found (try help)\n");
            status = 127;
        }
    }
    (Action::Continue, status)
}

/// `cat FILE`: a file of the RAM store (what `scp` copied in).
fn cat_file(name: &[u8]) -> u32 {
    let store = crate::files::store();
    match store.find(name) {
        Some(i) => {
            let data = store.file(i).data();
            // A captured command's output (ssh) is bounded: say so rather than cut silently.
            const NOTE: usize = 96;
            match console::capture_room() {
                Some(room) if data.len() > room => {
                    let shown = room.saturating_sub(NOTE);
                    console::write(&data[..shown]);
                    console::str("\ncat: ");
                    console::dec((data.len() - shown) as u64);
                    console::str(" more bytes not shown: copy the file with scp\n");
                    1
                }
                _ => {
                    console::write(data);
                    0
                }
            }
        }
        None => {
            console::text(name);
            console::str(": no such file (ls lists the RAM store)\n");
            1
        }
    }
}
