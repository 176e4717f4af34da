//! Guest networking for the pod network: the masquerade binding's bridge, tap and NAT rules
//! ([`masquerade`]), the bridge binding that hands the guest the pod's own address
//! ([`bridge`]), and the built-in DHCP server that gives the guest its address, as upstream's
//! launcher does; [`prepare`] builds either binding from the host for a launcher in its pod
//! (`kubevirt-launcher pod-network`), as upstream's virt-handler does.

pub mod bridge;
pub mod dhcp;
pub mod masquerade;
pub mod prepare;
