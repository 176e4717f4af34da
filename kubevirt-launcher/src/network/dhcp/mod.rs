//! The DHCP server the launcher runs for the guest on the masquerade tap: it answers only the
//! guest's MAC, always with the same address, gateway, DNS servers and search domains (upstream
//! gives the guest 10.0.2.2/24 behind the gateway 10.0.2.1).
//!
//! Packets come from the guest, so parsing never trusts them: malformed packets are errors,
//! never panics (property-tested).
//!
//! The packet codec is our own on purpose: the maintained `dhcproto` crate (0.15) depends on the
//! `hickory-proto` DNS library unconditionally, which would put a DNS stack into every launcher
//! for the few BOOTP fields and options a single-lease server reads and writes here.

mod packet;
mod server;

pub use self::packet::{MessageType, Packet, PacketError};
pub use self::server::{DhcpConfig, DhcpServer, bind_to_device, serve};
