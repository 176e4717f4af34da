//! The snapshot thread (`snapshot`): writes the VM's memory-state snapshot into the
//! launcher's snapshot directory when the control socket asks for one.

use super::rules::Rules;
use super::vcpu;
use libc::*;

/// The snapshot thread's allow-list.
pub fn rules(r: &mut Rules) {
    // The irqchip, PIT and clock are read with KVM ioctls on the VM descriptor; the virtio
    // workers paused for the cut are started again from this thread, so they inherit this
    // filter: it must allow what a worker (and a device activation) does, as a vCPU's does.
    vcpu::rules(r);
    // The snapshot's files: the directory, the state and memory files written through a
    // temporary file, synced and renamed into place, the memory file sized with holes.
    r.allow(&[
        SYS_mkdir,
        SYS_mkdirat,
        SYS_openat,
        SYS_write,
        SYS_pwrite64,
        SYS_lseek,
        SYS_ftruncate,
        SYS_fsync,
        SYS_fdatasync,
        SYS_rename,
        SYS_renameat,
        SYS_renameat2,
        SYS_unlink,
        SYS_unlinkat,
    ]);
}
