//! kubevirt-launcher: the per-VM process (upstream's virt-launcher): a VirtualMachineInstance in,
//! a running VM out.
//!
//! Built so far:
//! - [`plan`]: the VMI spec turned into a launch plan for the VMM (CPU topology, memory, firmware,
//!   kernel boot, disks and their volume sources, RNG, CPU feature mask, serial console). Every field
//!   the launcher does not support yet is an error naming its path, never silently ignored.
//! - [`cloudinit`]: the `cidata` (NoCloud) and `config-2` (ConfigDrive) disks cloud-init reads.
//! - [`console`]: the serial console on a unix socket (readers, one writer, scroll-back, log).
//! - [`control`]: the control API on a unix socket, in the types of `kubevirt-launcher-protocol`.
//! - [`disks`]: each planned disk prepared on the host with upstream's lifetime (emptyDisks and
//!   containerDisk overlays vanish with the VMI, claims persist).
//! - [`logging`]: the launcher's log on stderr, as text or upstream virt-launcher's JSON lines.
//! - [`network`]: the masquerade binding's built-in DHCP server.
//! - [`oci`]: containerDisk images pulled from a registry or an OCI layout, verified, cached.
//!
//! - [`run`]: a VMI launched on kubevirt-vmm: kernel from its image, virtio-blk disks, console and
//!   control sockets.
#![deny(missing_docs)]

pub mod cloudinit;
pub mod confine;
pub mod console;
pub mod control;
pub mod disks;
pub mod logging;
pub mod network;
pub mod oci;
pub mod plan;
pub mod run;
pub mod terminal;
