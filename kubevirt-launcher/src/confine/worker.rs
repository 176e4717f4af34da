//! Virtio queue workers (`virtio-blk`, `virtio-net`, `virtio-rng`, `virtio-console`): they
//! wait on queue notifications and do the device's I/O on descriptors opened before.

use super::common;
use super::rules::Rules;
use libc::*;

/// A device worker's allow-list.
pub fn rules(r: &mut Rules) {
    common::runtime(r);
    // Waiting: the worker's epoll set (queue ioeventfds, the tap, its stop event).
    r.allow(&[SYS_epoll_wait, SYS_epoll_pwait]);
    // Eventfds (queue notifications read, interrupts written through irqfds), the tap's
    // frames, the console pipe.
    r.allow(&[SYS_read, SYS_readv, SYS_writev]);
    // Disk I/O on the image descriptors (raw and qcow2): positioned and vectored reads and
    // writes, flushes (virtio-blk FLUSH), discard and write-zeroes, the qcow2 file's growth.
    r.allow(&[
        SYS_pread64,
        SYS_pwrite64,
        SYS_preadv,
        SYS_pwritev,
        SYS_preadv2,
        SYS_pwritev2,
        SYS_fdatasync,
        SYS_fsync,
        SYS_fallocate,
        SYS_ftruncate,
        SYS_lseek,
        SYS_fstat,
        SYS_newfstatat,
        SYS_statx,
    ]);
    // A worker owns its device's disk images: when the VM ends (or reboots) it drops them,
    // releasing their open-file-description locks (F_OFD_SETLK with F_UNLCK).
    r.allow(&[SYS_fcntl]);
    // A disk's error policy `stop` pauses the VM from its worker, which holds the guest's clock.
    common::paused_clock(r);
}
