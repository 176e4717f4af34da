//! The console (`console-out`, `console-accept`, `console-client`, `console-reader`, and
//! `stdin` in standalone mode): the serial console's bytes between the guest's pipe, the
//! console socket's clients and the terminal.

use super::common::{self, TTY_TUN};
use super::rules::Rules;
use libc::*;

/// The console threads' allow-list.
pub fn rules(r: &mut Rules) {
    common::runtime(r);
    // A reader thread per client.
    common::spawn_threads(r);
    // The console pipe, the clients' connections, the log file and the terminal.
    r.allow(&[
        SYS_read,
        SYS_accept4,
        SYS_recvfrom,
        SYS_sendto,
        SYS_poll,
        SYS_fcntl,
        SYS_fsync,
        SYS_fdatasync,
    ]);
    // The log's rotation past 4 MiB: console.log renamed to console.log.1 and a new one
    // opened for appending (O_WRONLY | O_CREAT | O_APPEND, never O_RDWR or O_TRUNC).
    r.allow(&[SYS_rename, SYS_renameat, SYS_renameat2]);
    let append = (O_WRONLY | O_CREAT | O_APPEND) as u64;
    r.allow_masked(
        SYS_openat,
        2,
        (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND) as u64,
        append,
    );
    // Typed keys reach the guest's UART (an irqfd write); the terminal's modes.
    common::ioctl_type(r, TTY_TUN);
}
