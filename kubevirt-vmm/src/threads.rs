//! A hook the embedding program runs at the start of every thread the VMM spawns, so it can
//! confine each kind of thread (a seccomp filter per kind, as Firecracker and Cloud Hypervisor
//! do) without the library depending on a seccomp compiler.
//!
//! The hook is process-wide because device workers are spawned deep inside device activation
//! (on the vCPU thread that wrote DRIVER_OK), far from any configuration a caller could pass.
//! Threads spawned by a thread inherit its seccomp filter, so a device worker started from a
//! vCPU runs under the vCPU's filter and its own.

use std::sync::OnceLock;

/// The kinds of thread the VMM spawns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmmThread {
    /// A vCPU (`vcpu<N>`): runs `KVM_RUN` and the port/MMIO exits it takes.
    Vcpu,
    /// A virtio device's queue worker (`virtio-blk`, `virtio-net`, `virtio-rng`,
    /// `virtio-console`): waits on queue notifications and does the device's I/O.
    DeviceWorker,
}

static HOOK: OnceLock<fn(VmmThread)> = OnceLock::new();

/// Sets the function every VMM thread calls first, once it has everything that needs wider
/// rights (a vCPU: its kick signal handler and `kvm_run` mapping). Returns `false` when a hook
/// was set before (it stays).
pub fn set_thread_start_hook(hook: fn(VmmThread)) -> bool {
    HOOK.set(hook).is_ok()
}

/// Called by a VMM thread as it starts.
pub(crate) fn thread_started(kind: VmmThread) {
    if let Some(hook) = HOOK.get() {
        hook(kind);
    }
}
