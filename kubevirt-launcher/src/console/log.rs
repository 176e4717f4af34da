//! The console log file (`console.log`), capped as the pod contract says: once it passes
//! [`LOG_LIMIT`] it is renamed `console.log.1` (replacing the previous one) and a new file is
//! started, so a chatty guest never fills the node's disk. `kubevirt-launcher console-log`
//! ([`super::follow`]) follows it across the rename.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The size past which the log is rotated: 4 MiB.
pub const LOG_LIMIT: u64 = 4 << 20;

/// The rotated file's name: the log's with `.1` appended.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// An append-only log that rotates itself.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    limit: u64,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl RotatingLog {
    /// Opens (or creates) `path` for appending, rotating past `limit` bytes.
    pub fn open(path: &Path, limit: u64) -> io::Result<Self> {
        let file = open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file: Some(file),
            size,
            limit,
        })
    }

    /// Appends `bytes`; rotates first when the file is already past the limit. A log that could
    /// not be reopened after a rotation stays closed (the console itself goes on).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.size >= self.limit {
            self.file = None;
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.size = 0;
            self.file = Some(open(&self.path)?);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_past_its_limit_keeping_one_old_file() {
        let dir = std::env::temp_dir().join(format!("kvl-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let mut log = RotatingLog::open(&path, 10).unwrap();
        log.write(b"0123456789").unwrap();
        log.write(b"abc").unwrap();
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"0123456789");
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        log.write(b"defghijk").unwrap();
        log.write(b"X").unwrap();
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"abcdefghijk");
        assert_eq!(std::fs::read(&path).unwrap(), b"X");
        // Reopened, it counts what is already there.
        let mut again = RotatingLog::open(&path, 2).unwrap();
        again.write(b"Y").unwrap();
        again.write(b"Z").unwrap();
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"XY");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
