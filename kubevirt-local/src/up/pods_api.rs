//! Where pods reach the API server: the pod network's gateway, at a port that stays the same
//! for the life of a data directory. Containers get it as `KUBERNETES_SERVICE_HOST`/`PORT`
//! when they start and keep it for good (a cluster's `kubernetes` Service address does not
//! move either), so an `up` restarted on the same data directory serves pods where the first
//! one did, even when its own `--listen` port is another (`127.0.0.1:0` picks a new one each
//! start): virt-controller, virt-handler and the other in-cluster clients reconnect to it.

use std::path::Path;

use super::UpError;

/// The file below the data directory that keeps the port.
const PORT_FILE: &str = "node/api-port-for-pods";

/// The port pods reach the API server at: the one an earlier start on `dir` recorded, or
/// `listen_port` (the API server's own), then recorded.
///
/// # Errors
/// [`UpError::Io`] when the record cannot be written. A record that is not a port is replaced
/// (with a warning): pods started with it could not reach the API server anyway.
pub(super) fn port(dir: &Path, listen_port: u16) -> Result<u16, UpError> {
    let path = dir.join(PORT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<u16>() {
            Ok(port) if port != 0 => return Ok(port),
            _ => tracing::warn!(path = %path.display(), record = %text.trim(),
                "not a port; pods reach the API server at the new one"),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(UpError::Io { path, source }),
    }
    let io = |source| UpError::Io {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{listen_port}\n")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(listen_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_port_is_kept_for_later_starts() {
        let dir = kubevirt_testsupport::tempdir("pods-api");
        assert_eq!(port(&dir, 37777).unwrap(), 37777);
        assert_eq!(port(&dir, 42163).unwrap(), 37777);
        assert_eq!(
            std::fs::read_to_string(dir.join(PORT_FILE)).unwrap(),
            "37777\n"
        );
    }

    #[test]
    fn a_record_that_is_not_a_port_is_replaced() {
        let dir = kubevirt_testsupport::tempdir("pods-api");
        std::fs::create_dir_all(dir.join("node")).unwrap();
        for bad in ["", "0", "70000", "port"] {
            std::fs::write(dir.join(PORT_FILE), bad).unwrap();
            assert_eq!(port(&dir, 6443).unwrap(), 6443, "{bad:?}");
            assert_eq!(port(&dir, 1234).unwrap(), 6443, "{bad:?}");
        }
    }

    #[test]
    fn an_unreadable_record_is_an_error_naming_it() {
        let dir = kubevirt_testsupport::tempdir("pods-api");
        // A directory where the file should be: reading it fails with something else than
        // NotFound.
        std::fs::create_dir_all(dir.join(PORT_FILE)).unwrap();
        let err = port(&dir, 6443).unwrap_err().to_string();
        assert!(err.contains(PORT_FILE), "{err}");
    }
}
