//! A Linux tap device as a [`NetBackend`]: opened through `/dev/net/tun` with
//! `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` and a 12-byte vnet header, non-blocking.
//!
//! A tap belongs to the network namespace of the thread that created it; to put a VM's NIC
//! in a pod's namespace, create the tap there (or let the launcher do it) and hand the
//! descriptor over with [`Tap::from_fd`].

use std::ffi::c_int;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::VNET_HDR_LEN;
use super::backend::NetBackend;

/// The clone device taps are created through.
pub const TUN_DEVICE: &str = "/dev/net/tun";
/// Longest interface name (`IFNAMSIZ` minus the terminating NUL).
pub const MAX_NAME_LEN: usize = 15;
const IFF_TAP: i16 = libc::IFF_TAP as i16;
const IFF_NO_PI: i16 = libc::IFF_NO_PI as i16;
const IFF_VNET_HDR: i16 = libc::IFF_VNET_HDR as i16;

/// `struct ifreq` as `TUNSETIFF` / `TUNGETIFF` use it: a name and the flags.
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; 16],
    flags: i16,
    _pad: [u8; 22],
}

impl IfReq {
    fn new() -> Self {
        IfReq {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        }
    }

    fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
}

/// Why a tap could not be used. Each message says which step failed and what to check.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name is empty, too long or holds a NUL.
    #[error("tap name {0:?} is invalid: it must be 1 to {MAX_NAME_LEN} bytes without NUL")]
    InvalidName(String),
    /// `/dev/net/tun` did not open.
    #[error(
        "opening {TUN_DEVICE}: {0} (is the tun module loaded, and does this process have the device in its cgroup / mount namespace?)"
    )]
    OpenTun(#[source] io::Error),
    /// `TUNSETIFF` failed.
    #[error(
        "creating or attaching tap {name:?} (TUNSETIFF): {source} (creating a tap needs CAP_NET_ADMIN in the network namespace; an existing interface of that name must be a tap with vnet headers owned by this user)"
    )]
    SetIff {
        /// The interface.
        name: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `TUNGETIFF` on a handed-over descriptor failed: it is not an attached tun/tap.
    #[error("descriptor {fd} is not an attached tun/tap device (TUNGETIFF: {source})")]
    NotTun {
        /// The descriptor.
        fd: RawFd,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The handed-over device lacks a flag this backend needs.
    #[error(
        "tap {name:?} was opened with flags {flags:#x}: it must be IFF_TAP | IFF_NO_PI | IFF_VNET_HDR (a tun device or a tap without vnet headers cannot carry virtio-net frames)"
    )]
    WrongFlags {
        /// The interface.
        name: String,
        /// Its flags.
        flags: i16,
    },
    /// `TUNSETVNETHDRSZ` or making the descriptor non-blocking failed.
    #[error("configuring tap {name:?} ({step}): {source}")]
    Configure {
        /// The interface.
        name: String,
        /// What was being set.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A tap interface carrying the guest's frames.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Creates tap `name` in this thread's network namespace, or attaches to the existing
    /// tap of that name.
    ///
    /// # Errors
    /// [`TapError`] when `/dev/net/tun` cannot be opened or the `TUNSETIFF`/offload ioctls fail
    /// (creating a tap needs `CAP_NET_ADMIN`).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
            return Err(TapError::InvalidName(name.into()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_DEVICE)
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq::new();
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req.flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`; `req` is one, laid out as the
        // kernel's (16-byte name, flags, padding to 40 bytes), and outlives the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            return Err(TapError::SetIff {
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        let tap = Tap {
            file,
            name: req.name(),
        };
        tap.set_vnet_hdr_size()?;
        Ok(tap)
    }

    /// Takes over a tap another program opened (for instance in a pod's network namespace).
    /// It must have been created with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`; the header size
    /// is set to 12 and the descriptor made non-blocking.
    ///
    /// # Errors
    /// [`TapError`] when `fd` is not such a tap or the ioctls fail.
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, TapError> {
        let raw = fd.as_raw_fd();
        let mut req = IfReq::new();
        // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`, which is one; a descriptor
        // that is not a tun device fails the call without writing.
        let rc = unsafe { libc::ioctl(raw, libc::TUNGETIFF, &mut req) };
        if rc < 0 {
            return Err(TapError::NotTun {
                fd: raw,
                source: io::Error::last_os_error(),
            });
        }
        let name = req.name();
        let want = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
        if req.flags & want != want {
            return Err(TapError::WrongFlags {
                name,
                flags: req.flags,
            });
        }
        // SAFETY: F_GETFL/F_SETFL on a descriptor we own change only its status flags.
        let nonblocking = unsafe {
            let flags = libc::fcntl(raw, libc::F_GETFL);
            flags >= 0 && libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
        };
        if !nonblocking {
            return Err(TapError::Configure {
                name,
                step: "O_NONBLOCK",
                source: io::Error::last_os_error(),
            });
        }
        let tap = Tap {
            file: File::from(fd),
            name,
        };
        tap.set_vnet_hdr_size()?;
        Ok(tap)
    }

    fn set_vnet_hdr_size(&self) -> Result<(), TapError> {
        let size = VNET_HDR_LEN as c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, which points at `size`.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) };
        if rc < 0 {
            return Err(TapError::Configure {
                name: self.name.clone(),
                step: "TUNSETVNETHDRSZ 12",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The tap's descriptor, e.g. to keep the interface alive or to hand a duplicate to another
/// device ([`Tap::from_fd`]).
impl std::os::fd::AsFd for Tap {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl From<Tap> for OwnedFd {
    fn from(tap: Tap) -> OwnedFd {
        tap.file.into()
    }
}

impl NetBackend for Tap {
    fn rx_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we borrow
            // mutably for the call.
            let n =
                unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: the kernel reads at most `frame.len()` bytes from `frame`.
            let n =
                unsafe { libc::write(self.file.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
            if n >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for name in ["", "a-name-that-is-far-too-long", "nul\0"] {
            let err = Tap::open(name).unwrap_err();
            assert!(matches!(err, TapError::InvalidName(_)), "{err}");
        }
    }

    #[test]
    fn a_descriptor_that_is_not_a_tap_is_refused() {
        let file = File::open("/dev/null").unwrap();
        let err = Tap::from_fd(OwnedFd::from(file)).unwrap_err();
        assert!(matches!(err, TapError::NotTun { .. }), "{err}");
        assert!(err.to_string().contains("not an attached tun/tap"));
    }

    #[test]
    fn ifreq_matches_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        let mut r = IfReq::new();
        r.name[..4].copy_from_slice(b"tap0");
        assert_eq!(r.name(), "tap0");
    }
}
