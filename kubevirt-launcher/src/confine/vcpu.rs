//! vCPU threads (`vcpu<N>`): `KVM_RUN` and the port/MMIO exits it takes.
//!
//! A guest that writes DRIVER_OK starts its device's worker on this thread, and a thread
//! inherits its parent's filter: so a vCPU may also do what a worker does, and start threads.

use super::common::{self, KVMIO, TTY_TUN};
use super::rules::Rules;
use super::worker;
use libc::*;

/// A vCPU's allow-list.
pub fn rules(r: &mut Rules) {
    worker::rules(r);
    common::spawn_threads(r);
    // KVM_RUN, register and LAPIC access for pause snapshots, KVM_SIGNAL_MSI, ioeventfd and
    // irqfd (un)registration when the guest moves a BAR or programs MSI-X.
    common::ioctl_type(r, KVMIO);
    // Activating virtio-net sets the tap's offloads and header size (TUNSETOFFLOAD,
    // TUNSETVNETHDRSZ) on the descriptor opened at launch.
    common::ioctl_type(r, TTY_TUN);
    // Activating a device: its worker's epoll set, stop eventfd and descriptor duplicates.
    r.allow(&[
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_eventfd2,
        SYS_fcntl,
        SYS_dup,
    ]);
}
