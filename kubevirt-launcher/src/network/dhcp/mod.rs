//! The DHCP server the launcher runs for the guest on the masquerade tap: it answers only the
//! guest's MAC, always with the same address, gateway, DNS servers and search domains (upstream
//! gives the guest 10.0.2.2/24 behind the gateway 10.0.2.1).
//!
//! Packets come from the guest, so parsing never trusts them: malformed packets are errors,
//! never panics (property-tested).

mod packet;
mod server;

pub use self::packet::{MessageType, Packet, PacketError};
pub use self::server::{DhcpConfig, DhcpServer, bind_to_device, serve};
