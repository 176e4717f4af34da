//! kubevirt-vmm: a reusable KVM virtual machine monitor library on the rust-vmm crates.
//!
//! Not implemented yet: the crate exists so the workspace has its final shape. The VMM core (vCPUs,
//! guest memory, buses, legacy devices, boot) and its devices (PCI, virtio, ACPI) are tracked as
//! their own issues; see docs/ARCHITECTURE.md for the plan.
#![deny(missing_docs)]
