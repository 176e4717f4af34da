//! Guest networking for the pod network's masquerade binding: the bridge, tap and NAT rules
//! ([`masquerade`]) and the built-in DHCP server
//! that gives the guest its fixed address, as upstream's launcher does; [`prepare`] builds the
//! binding from the host for a launcher in its pod (`kubevirt-launcher pod-network`), as
//! upstream's virt-handler does.

pub mod dhcp;
pub mod masquerade;
pub mod prepare;
