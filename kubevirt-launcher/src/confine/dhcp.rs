//! The pod network's DHCP server (`dhcp`): answers the guest on the bridge's UDP socket.

use super::common;
use super::rules::Rules;
use libc::*;

/// The DHCP thread's allow-list.
pub fn rules(r: &mut Rules) {
    common::runtime(r);
    // The socket bound at launch: receive with a timeout (to see the stop flag), answer.
    r.allow(&[SYS_recvfrom, SYS_sendto, SYS_recvmsg, SYS_sendmsg, SYS_poll]);
    // As it starts: broadcast replies and the receive timeout (socket-level options only).
    r.allow_arg_in(SYS_setsockopt, 1, &[SOL_SOCKET as u64]);
}
