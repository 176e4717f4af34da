//! libFuzzer target for an image's layers, which the image's author controls: tar archives,
//! plain, gzip or zstd, with whiteouts, links and odd names, scanned bottom first for the
//! containerDisk's file. The input is a wanted-path selector (first byte) and the layers,
//! separated by [`SEPARATOR`].
//!
//! Beyond "no panic, no hang": the finder writes nothing but its one output file (no entry name
//! can make it write elsewhere), the file it reports exists, and the path it found is the one
//! asked for (by default a single file directly under `disk/`).
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-launcher/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run oci_layers -- -max_total_time=60`

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::{fs, io};

use kubevirt_oci::DiskFinder;
use libfuzzer_sys::fuzz_target;

/// Between two layers of the input.
const SEPARATOR: &[u8] = b"\n--next-layer--\n";

/// One empty directory for the whole run, on tmpfs when there is one (the finder syncs).
fn workdir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let dir = PathBuf::from(format!("{base}/kubevirt-fuzz-oci-layers-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("a work directory");
        dir
    })
}

fn split<'a>(mut data: &'a [u8]) -> Vec<&'a [u8]> {
    let mut layers = Vec::new();
    while let Some(at) = data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        layers.push(&data[..at]);
        data = &data[at + SEPARATOR.len()..];
    }
    layers.push(data);
    layers
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let wanted = match selector % 3 {
        0 => None,
        1 => Some("disk/disk.img"),
        _ => Some("/boot/vmlinuz"),
    };
    let dir = workdir();
    let out = dir.join("disk.assembling");
    let mut finder = DiskFinder::new(wanted, &out);
    for layer in split(rest) {
        if finder.layer(&mut io::Cursor::new(layer)).is_err() {
            break;
        }
        if let Some(found) = finder.found() {
            match wanted {
                Some(w) => assert_eq!(found, w.trim_start_matches('/')),
                None => assert!(
                    found.strip_prefix("disk/").is_some_and(|f| !f.is_empty() && !f.contains('/')),
                    "found {found:?} for the default disk"
                ),
            }
        }
    }
    if let Some(path) = finder.finish() {
        assert_eq!(path, out);
        assert!(path.is_file(), "the reported disk is not a file");
    }
    let left: Vec<_> = fs::read_dir(dir)
        .expect("the work directory")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != "disk.assembling")
        .collect();
    assert!(left.is_empty(), "the finder wrote {left:?} beside its output");
    let _ = fs::remove_file(&out);
});
