//! What a disk does when its backend fails a request: KubeVirt's `disk.errorPolicy` (libvirt's
//! `error_policy`). `Stop` (KubeVirt's default) and `Enospace` hold the failed request and
//! pause the VM ([`crate::vm::lifecycle::Lifecycle::stop_for_io_error`]) instead of failing it
//! to the guest: once space is freed and the VM is resumed the request is run again, so the
//! guest never sees the error. `Report` answers the guest with an I/O error status, `Ignore`
//! with success.

use std::io;

/// A disk's error policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Fail the request to the guest (`VIRTIO_BLK_S_IOERR`): the library's default.
    #[default]
    Report,
    /// Hold the request and pause the VM on any I/O error (KubeVirt's default).
    Stop,
    /// Hold the request and pause the VM when the backend is out of space (`ENOSPC`, `EDQUOT`),
    /// report any other error.
    Enospace,
    /// Answer the guest as if the request succeeded.
    Ignore,
}

/// An `errorPolicy` value KubeVirt does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error policy {0:?}: one of stop, report, ignore, enospace")]
pub struct UnknownErrorPolicy(pub String);

impl std::str::FromStr for ErrorPolicy {
    type Err = UnknownErrorPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stop" => Ok(ErrorPolicy::Stop),
            "report" => Ok(ErrorPolicy::Report),
            "ignore" => Ok(ErrorPolicy::Ignore),
            "enospace" => Ok(ErrorPolicy::Enospace),
            other => Err(UnknownErrorPolicy(other.to_string())),
        }
    }
}

impl ErrorPolicy {
    /// Whether `error` holds the request and pauses the VM.
    pub fn stops_on(self, error: &io::Error) -> bool {
        match self {
            ErrorPolicy::Stop => true,
            ErrorPolicy::Enospace => {
                matches!(
                    error.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            ErrorPolicy::Report | ErrorPolicy::Ignore => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubevirts_values_parse_and_decide_when_to_stop() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        let broken = io::Error::from_raw_os_error(libc::EIO);
        for (text, on_full, on_broken) in [
            ("stop", true, true),
            ("enospace", true, false),
            ("report", false, false),
            ("ignore", false, false),
        ] {
            let p: ErrorPolicy = text.parse().unwrap();
            assert_eq!(p.stops_on(&full), on_full, "{text}");
            assert_eq!(p.stops_on(&broken), on_broken, "{text}");
        }
        let e = "pause".parse::<ErrorPolicy>().unwrap_err();
        assert!(e.to_string().contains("\"pause\""), "{e}");
    }
}
