//! The main thread once the VM runs: it supervises the VM, rebuilds it when the guest reboots
//! (opening /dev/kvm, mapping guest memory, starting vCPUs), and at the end removes the run
//! directory's ephemeral files and writes the final status. No processes, no new sockets, no
//! namespaces, mounts or privileges.

use super::common::{self, KVMIO, TTY_TUN};
use super::rules::Rules;
use super::vcpu;
use libc::*;

/// The main thread's allow-list.
pub fn rules(r: &mut Rules) {
    // A reboot starts new vCPUs, which inherit this filter: the main thread needs theirs.
    vcpu::rules(r);
    common::ioctl_type(r, KVMIO);
    // Restoring the terminal's modes in standalone mode.
    common::ioctl_type(r, TTY_TUN);
    // Rebuilding the VM: /dev/kvm, the kernel or firmware image, memfd-backed RAM.
    r.allow(&[
        SYS_openat,
        SYS_memfd_create,
        SYS_readlink,
        SYS_access,
        SYS_poll,
    ]);
    // Cleanup and the final status: ephemeral disks removed, final.json written atomically.
    r.allow(&[
        SYS_getdents64,
        SYS_unlink,
        SYS_unlinkat,
        SYS_rmdir,
        SYS_rename,
        SYS_renameat,
        SYS_renameat2,
        SYS_mkdir,
        SYS_mkdirat,
        SYS_getcwd,
    ]);
    // Signal dispositions (SIGTERM and SIGINT are set before the filter; std may reset
    // SIGPIPE); resource limits read by std.
    r.allow(&[SYS_rt_sigaction, SYS_prlimit64]);
}
