//! The control socket (`control-accept`, `control-client`, and `grace-period`, which a
//! shutdown request starts): JSON requests from the node agent and virtctl.

use super::common;
use super::rules::Rules;
use libc::*;

/// The control threads' allow-list.
pub fn rules(r: &mut Rules) {
    common::runtime(r);
    // One thread per connection, and the grace-period timer a shutdown starts.
    common::spawn_threads(r);
    // The listening socket (made before the filter) and its connections: no new sockets.
    r.allow(&[
        SYS_accept4,
        SYS_recvfrom,
        SYS_sendto,
        SYS_read,
        SYS_poll,
        SYS_fcntl,
    ]);
    // The `stats` request lists /proc/self/task (the vCPU threads' CPU time).
    r.allow(&[SYS_getdents64]);
    // Pause, resume, stop and reset kick the vCPUs out of KVM_RUN (tgkill, in the runtime
    // set) and press the ACPI power button through an irqfd (write); pause and resume hold the
    // guest's clock.
    common::paused_clock(r);
}
