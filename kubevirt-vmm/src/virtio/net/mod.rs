//! virtio-net (type 1): one receive and one transmit queue between the guest and a host
//! [`NetBackend`] (a [`Tap`] today), the MAC address from [`NetConfig`] and the link reported
//! up.
//!
//! No offloads are offered, so every frame travels behind a plain 12-byte
//! [`virtio_net_hdr`](VNET_HDR_LEN) (flags 0, no GSO) and the backend carries that header too:
//! a tap is opened with `IFF_VNET_HDR` and a header size of 12, so frames move between the
//! guest's buffers and the tap without reformatting.
//!
//! Files: [`device`] (configuration space, features, activation), `queues` (moving frames
//! between the rings and the backend, with broken-ring handling), `backend` (the trait),
//! `tap` (the Linux tap backend).
//!
//! ```no_run
//! use kubevirt_vmm::virtio::net::{Net, NetConfig, Tap};
//! # fn f(config: kubevirt_vmm::VmConfig) -> Result<(), Box<dyn std::error::Error>> {
//! let tap = Tap::open("tap0")?; // or Tap::from_fd(fd) for a tap the launcher opened
//! let net = Net::new(NetConfig {
//!     mac: [0x02, 0x00, 0x00, 0x00, 0x00, 0x01],
//!     backend: Box::new(tap),
//! });
//! let vm = kubevirt_vmm::Vm::builder(config).virtio_device(Box::new(net)).build()?;
//! # Ok(()) }
//! ```

internal_mod!(backend);
pub mod device;
internal_mod!(queues);
internal_mod!(tap);

pub use backend::NetBackend;
pub use device::{Net, NetConfig, NetCounters};
pub use tap::{Tap, TapError};

/// The virtio device type of a network card.
pub const VIRTIO_ID_NET: u32 = 1;
/// `VIRTIO_NET_F_MAC`: the device configuration holds the MAC address.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// `VIRTIO_NET_F_STATUS`: the device configuration holds the link status.
pub const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// `VIRTIO_NET_S_LINK_UP` in the configuration's `status`.
pub const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// Bytes of `struct virtio_net_hdr` before every frame (VERSION_1: with `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;
/// Largest header plus frame moved in either direction; longer transmit chains are dropped.
/// Without offloads a frame is at most an MTU plus its Ethernet header, so this is generous.
pub const MAX_FRAME_LEN: usize = VNET_HDR_LEN + 65_550;
/// Entries per queue.
pub const QUEUE_SIZE: u16 = 256;
