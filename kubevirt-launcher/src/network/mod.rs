//! Guest networking for the pod network's masquerade binding: the bridge, tap and NAT rules
//! ([`masquerade`]) and the built-in DHCP server
//! that gives the guest its fixed address, as upstream's launcher does.

pub mod dhcp;
pub mod masquerade;
