//! The migration thread (`migration`): connects to the target launcher and streams the VM to
//! it when the control socket asks for a live migration.

use super::rules::Rules;
use super::snapshot;
use libc::*;

/// The migration thread's allow-list.
pub fn rules(r: &mut Rules) {
    // Pausing the vCPUs, saving them, the irqchip and the devices (a block device flushes its
    // disk), KVM's dirty log and memory slots, and resuming the virtio workers after a failed
    // migration: what the snapshot thread does, less its files (it inherits those rules).
    snapshot::rules(r);
    // The one socket kind it opens: a stream to the target (`unix:` or `tcp:` with an IP
    // address, so no name resolution), with send/receive timeouts; a TCP connect with a
    // timeout is a non-blocking connect (FIONBIO, an ioctl of type 'T' the vCPU set allows)
    // and a poll.
    r.allow_arg_in(
        SYS_socket,
        0,
        &[AF_UNIX as u64, AF_INET as u64, AF_INET6 as u64],
    );
    r.allow(&[
        SYS_connect,
        SYS_setsockopt,
        SYS_getsockopt,
        SYS_sendto,
        SYS_recvfrom,
        SYS_read,
        SYS_write,
        SYS_shutdown,
        SYS_poll,
        SYS_ppoll,
        SYS_nanosleep,
        SYS_clock_nanosleep,
    ]);
}
