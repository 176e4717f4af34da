//! The [`NetBackend`] trait: where a virtio-net device's frames go and come from.

use std::io;
use std::os::fd::RawFd;

/// A host-side frame source and sink. Every frame crossing this interface starts with a
/// [`super::VNET_HDR_LEN`]-byte `virtio_net_hdr` (all zero but `num_buffers` when no offload
/// is in use), as a tap with `IFF_VNET_HDR` exchanges them.
///
/// The device's worker watches [`NetBackend::rx_fd`] edge-triggered and calls
/// [`NetBackend::recv`] until it returns [`io::ErrorKind::WouldBlock`] or the guest runs out
/// of receive buffers; it never blocks in the backend.
pub trait NetBackend: Send + 'static {
    /// A descriptor that becomes readable when a frame may be waiting.
    fn rx_fd(&self) -> RawFd;
    /// Reads one frame (header included) into `buf`, returning its length;
    /// [`io::ErrorKind::WouldBlock`] when none is waiting. A frame longer than `buf` may be
    /// truncated.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one frame (header included).
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
}

impl std::fmt::Debug for dyn NetBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetBackend(fd {})", self.rx_fd())
    }
}
