//! Guest networking for the pod network's masquerade binding. So far: the built-in DHCP server
//! that gives the guest its fixed address, as upstream's launcher does.

pub mod dhcp;
