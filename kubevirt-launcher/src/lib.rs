//! kubevirt-launcher: the per-VM process (upstream's virt-launcher): a VirtualMachineInstance in, a
//! running VM out.
//!
//! Not implemented yet: it needs the VMM library first. See docs/ARCHITECTURE.md for the plan.
#![deny(missing_docs)]
