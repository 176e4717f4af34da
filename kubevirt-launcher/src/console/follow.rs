//! Following a console log as it grows (`kubevirt-launcher console-log`, the pod's
//! `guest-console-log` container): waits for the file to appear, prints what is written to it,
//! and when the launcher rotates it ([`super::log`]) finishes the old file before moving to the
//! new one. It polls (every [`POLL`]): no inotify watch to lose across the rename, and no busy
//! loop.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the file is looked at when there is nothing new.
pub const POLL: Duration = Duration::from_millis(200);

/// The file being followed, and which file it is (a rotation puts another at the path).
struct Open {
    file: File,
    id: (u64, u64),
    position: u64,
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn open(path: &Path) -> io::Result<Option<Open>> {
    match File::open(path) {
        Ok(file) => {
            let id = identity(&file.metadata()?);
            Ok(Some(Open {
                file,
                id,
                position: 0,
            }))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Copies what `open` has past its position to `out`.
fn drain(open: &mut Open, out: &mut impl Write) -> io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = open.file.read(&mut buf)?;
        if n == 0 {
            return out.flush();
        }
        out.write_all(&buf[..n])?;
        open.position += n as u64;
    }
}

/// Prints `path` to `out` as it grows until `stop` is set (checked every `poll`), and then
/// what was written up to then.
///
/// # Errors
/// Reading the log or writing `out` failed.
pub fn follow(
    path: &Path,
    out: &mut impl Write,
    stop: &AtomicBool,
    poll: Duration,
) -> io::Result<()> {
    let mut current: Option<Open> = None;
    while !stop.load(Ordering::SeqCst) {
        if current.is_none() {
            current = open(path)?;
        }
        let Some(open_file) = current.as_mut() else {
            std::thread::sleep(poll);
            continue;
        };
        drain(open_file, out)?;
        match std::fs::metadata(path) {
            Ok(meta) if identity(&meta) == open_file.id => {
                if meta.len() < open_file.position {
                    // Truncated in place: start over.
                    open_file.file.seek(SeekFrom::Start(0))?;
                    open_file.position = 0;
                    continue;
                }
            }
            Ok(_) => {
                // Rotated: what was written to the old file before the rename, then the new
                // file from its start.
                drain(open_file, out)?;
                current = None;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Renamed and the new file not made yet.
                drain(open_file, out)?;
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(poll);
    }
    // What was written before the stop (the launcher's last lines when it ended).
    if current.is_none() {
        current = open(path)?;
    }
    match current.as_mut() {
        Some(open_file) => drain(open_file, out),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::log::{RotatingLog, rotated};
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wait_for(sink: &Sink, want: &[u8]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().as_slice() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "got {:?}",
                String::from_utf8_lossy(&sink.0.lock().unwrap())
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn waits_for_the_file_follows_it_across_rotations_and_stops_on_request() {
        let dir = std::env::temp_dir().join(format!("kvl-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let stop = Arc::new(AtomicBool::new(false));
        let sink = Sink::default();
        let follower = {
            let (path, stop, mut sink) = (path.clone(), stop.clone(), sink.clone());
            std::thread::spawn(move || follow(&path, &mut sink, &stop, Duration::from_millis(10)))
        };
        std::thread::sleep(Duration::from_millis(50));
        let mut log = RotatingLog::open(&path, 8).unwrap();
        log.write(b"boot ").unwrap();
        wait_for(&sink, b"boot ");
        // Past the limit: "boot 123" goes to console.log.1, the rest to a new console.log.
        log.write(b"123").unwrap();
        log.write(b"-after").unwrap();
        log.write(b"!").unwrap();
        wait_for(&sink, b"boot 123-after!");
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"boot 123");
        stop.store(true, Ordering::SeqCst);
        follower.join().unwrap().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
