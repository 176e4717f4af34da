//! Constructors and chainable setters for the common shapes, so a VM reads like its YAML:
//!
//! ```
//! use kubevirt_api::core::v1::{RunStrategy, VirtualMachine};
//!
//! let vm = VirtualMachine::from_container_disk("fedora", "quay.io/containerdisks/fedora:41")
//!     .run_strategy(RunStrategy::Always)
//!     .cores(2)
//!     .memory("2Gi")
//!     .pod_network_masquerade()
//!     .cloud_init_user_data("#cloud-config\npassword: fedora\n");
//! assert_eq!(vm.template_spec().domain.devices.disks.as_ref().map(Vec::len), Some(2));
//! assert!(kubevirt_api::validate(&vm).is_empty());
//! ```
//!
//! - [`VirtualMachine`](crate::core::v1::VirtualMachine) and
//!   [`VirtualMachineInstance`](crate::core::v1::VirtualMachineInstance): `named`,
//!   `from_container_disk`, `label`, and every setter of
//!   [`VirtualMachineInstanceSpec`](crate::core::v1::VirtualMachineInstanceSpec) (`memory`, `cores`,
//!   `disk`, `cloud_init_user_data`, `kernel_boot`, ...); `template_spec_mut` edits the template
//!   without unwrapping.
//! - [`Disk`](crate::core::v1::Disk), [`Volume`](crate::core::v1::Volume),
//!   [`Interface`](crate::core::v1::Interface), [`Network`](crate::core::v1::Network),
//!   [`KernelBoot`](crate::core::v1::KernelBoot): one constructor per kind of source or target;
//!   [`InterfaceBinding`] reads and writes an interface's binding union.

mod binding;
mod devices;
mod spec;
mod vm;

pub use self::binding::InterfaceBinding;
pub use self::vm::ROOT_DISK;
