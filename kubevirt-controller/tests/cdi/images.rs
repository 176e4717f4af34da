//! Test images made with real qemu-img and compressors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MIB: u64 = 1 << 20;
/// Where the marker is written in every image.
pub const MARKER_OFFSET: u64 = 5 * MIB + 123;
pub const MARKER: &[u8] = b"kubevirt-rs-import-marker";

pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A raw image of `size` bytes with [`MARKER`] at [`MARKER_OFFSET`].
pub fn raw(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(MARKER, MARKER_OFFSET).unwrap();
    path
}

/// `qemu-img convert -O <format>` of `src`.
pub fn convert(src: &Path, format: &str, name: &str) -> PathBuf {
    let dst = src.with_file_name(name);
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            format,
            src.to_str().unwrap(),
            dst.to_str().unwrap(),
        ],
    );
    dst
}

/// `xz` of `src` (the CLI).
pub fn xz(src: &Path) -> PathBuf {
    run("xz", &["-k", "-1", "-T1", src.to_str().unwrap()]);
    PathBuf::from(format!("{}.xz", src.display()))
}

/// gzip of `src` (flate2).
pub fn gz(src: &Path) -> PathBuf {
    let dst = PathBuf::from(format!("{}.gz", src.display()));
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&dst).unwrap(),
        flate2::Compression::fast(),
    );
    e.write_all(&std::fs::read(src).unwrap()).unwrap();
    e.finish().unwrap();
    dst
}

/// `zstd` of `src` (the CLI).
pub fn zst(src: &Path) -> PathBuf {
    let dst = PathBuf::from(format!("{}.zst", src.display()));
    run(
        "zstd",
        &[
            "-q",
            "-1",
            src.to_str().unwrap(),
            "-o",
            dst.to_str().unwrap(),
        ],
    );
    dst
}

/// A tar holding a directory, then `src` as `disk/<its name>`, then another file.
pub fn tar(src: &Path, name: &str) -> PathBuf {
    let dst = src.with_file_name(name);
    let mut b = tar::Builder::new(std::fs::File::create(&dst).unwrap());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    dir.set_mode(0o755);
    dir.set_cksum();
    b.append_data(&mut dir, "disk/", &[][..]).unwrap();
    let file_name = src.file_name().unwrap().to_str().unwrap();
    b.append_path_with_name(src, format!("disk/{file_name}"))
        .unwrap();
    let mut other = tar::Header::new_gnu();
    other.set_size(5);
    other.set_mode(0o644);
    other.set_cksum();
    b.append_data(&mut other, "README", &b"hello"[..]).unwrap();
    b.finish().unwrap();
    dst
}

/// The bytes at [`MARKER_OFFSET`] of `path` (a file or a device).
pub fn marker_at(path: &Path) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; MARKER.len()];
    f.read_exact_at(&mut buf, MARKER_OFFSET).unwrap();
    buf
}
