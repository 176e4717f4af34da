//! `qemu-img`: what an image is (`info`), whether it may be imported (CDI's validation) and
//! turning it into raw (`convert`, with its `-p` progress).
//!
//! `qemu-img info` reads an image a user chose, so it runs as upstream's does: the format named
//! (never probed) and limits on its address space (1 GiB) and CPU time (30 s), which a crafted
//! image cannot get past.

use super::format::DiskFormat;
use super::progress::Span;
use serde::Deserialize;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use thiserror::Error;

/// The program run.
const QEMU_IMG: &str = "qemu-img";
/// Address-space limit of `qemu-img info` (upstream's, from OpenStack Nova).
const INFO_MAX_MEMORY: u64 = 1 << 30;
/// CPU-time limit of `qemu-img info`, in seconds.
const INFO_MAX_CPU_SECONDS: u64 = 30;

/// What `qemu-img info --output=json` says of an image (the fields used).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ImageInfo {
    /// The format qemu read it as.
    pub format: String,
    /// The disk's size as the guest sees it.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// The backing file named in the image, if any.
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
    /// The image's own name, as qemu-img was given it.
    #[serde(default)]
    pub filename: String,
    /// The format's details (a qcow2's external data file, a vmdk's extents).
    #[serde(rename = "format-specific", default)]
    pub format_specific: Option<serde_json::Value>,
}

impl ImageInfo {
    /// Files other than the image itself that reading it would open: a qcow2's external data
    /// file, a vmdk's extents in other files.
    pub fn external_files(&self) -> Vec<String> {
        let Some(data) = self.format_specific.as_ref().and_then(|f| f.get("data")) else {
            return Vec::new();
        };
        let mut files = Vec::new();
        if let Some(file) = data.get("data-file").and_then(|f| f.as_str()) {
            files.push(file.to_string());
        }
        for extent in data
            .get("extents")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(file) = extent.get("filename").and_then(|f| f.as_str())
                && file != self.filename
            {
                files.push(file.to_string());
            }
        }
        files
    }
}

/// Failures of `qemu-img` and of the validation.
#[derive(Debug, Error)]
pub enum QemuError {
    /// The program is missing.
    #[error("qemu-img is not installed (Debian and Ubuntu: the qemu-utils package)")]
    NotInstalled,
    /// It could not be started or read.
    #[error("running qemu-img {what}: {source}")]
    Io {
        /// The subcommand.
        what: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// It failed.
    #[error("qemu-img {what} failed ({status}): {stderr}")]
    Failed {
        /// The subcommand.
        what: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// Its JSON did not parse.
    #[error("qemu-img info printed JSON this importer cannot read: {0}")]
    BadInfo(#[source] serde_json::Error),
    /// The header said one format, qemu another.
    #[error("the image's header says {expected}, but qemu-img reads it as {found}")]
    FormatMismatch {
        /// From the magic number.
        expected: DiskFormat,
        /// From qemu-img.
        found: String,
    },
    /// The image needs another file (CDI: "Image is invalid ... backing file").
    #[error(
        "the image is invalid: it has a backing file ({backing}); import a self-contained image (qemu-img convert it, or qemu-img rebase -b '' it, first)"
    )]
    BackingFile {
        /// The backing file it names.
        backing: String,
    },
    /// The image would read other files (of the importer's host, for an image made to).
    #[error(
        "the image is invalid: it refers to other files ({}); import a self-contained image", .files.join(", ")
    )]
    ExternalFiles {
        /// The files.
        files: Vec<String>,
    },
    /// The disk would not fit.
    #[error(
        "virtual image size {virtual_size} is larger than the reported available storage {available} ({explanation}). A larger PVC is required"
    )]
    TooLarge {
        /// The image's virtual size.
        virtual_size: u64,
        /// The room for it.
        available: u64,
        /// How `available` came about.
        explanation: String,
    },
}

/// Runs `qemu-img info` on `path`, read as `format`.
pub fn info(path: &Path, format: DiskFormat) -> Result<ImageInfo, QemuError> {
    let mut command = Command::new(QEMU_IMG);
    command
        .args(["info", "--output=json", "-f", format.qemu_name()])
        .arg(path);
    limit(&mut command);
    let output = command.output().map_err(|e| spawn_error("info", e))?;
    if !output.status.success() {
        return Err(QemuError::Failed {
            what: "info",
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(QemuError::BadInfo)
}

/// Upstream's checks before converting: the format is what the header said, no backing file,
/// and the virtual size fits in `available` bytes (`explanation` says where that came from).
pub fn validate(
    info: &ImageInfo,
    expected: DiskFormat,
    available: u64,
    explanation: &str,
) -> Result<(), QemuError> {
    if info.format != expected.qemu_name() {
        return Err(QemuError::FormatMismatch {
            expected,
            found: info.format.clone(),
        });
    }
    if let Some(backing) = info.backing_filename.as_deref().filter(|b| !b.is_empty()) {
        return Err(QemuError::BackingFile {
            backing: backing.to_string(),
        });
    }
    let files = info.external_files();
    if !files.is_empty() {
        return Err(QemuError::ExternalFiles { files });
    }
    if info.virtual_size > available {
        return Err(QemuError::TooLarge {
            virtual_size: info.virtual_size,
            available,
            explanation: explanation.to_string(),
        });
    }
    Ok(())
}

/// `qemu-img convert -p -t writeback -f <format> -O raw <src> <dst>`, reporting its progress into
/// `span`. `dst` may be a block device (`-n`: written in place, not created).
pub fn convert(
    src: &Path,
    format: DiskFormat,
    dst: &Path,
    dst_is_device: bool,
    span: &Span,
) -> Result<(), QemuError> {
    let mut command = Command::new(QEMU_IMG);
    command.args([
        "convert",
        "-p",
        "-t",
        "writeback",
        "-f",
        format.qemu_name(),
        "-O",
        "raw",
    ]);
    if dst_is_device {
        command.arg("-n");
    }
    command
        .arg(src)
        .arg(dst)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    die_with_parent(&mut command);
    let mut child = command.spawn().map_err(|e| spawn_error("convert", e))?;
    let io_err = |source| QemuError::Io {
        what: "convert",
        source,
    };
    // stderr on its own thread, so neither pipe can fill while the other is read.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        })
    });
    if let Some(stdout) = child.stdout.take() {
        // `-p` redraws "    (12.34/100%)" with carriage returns.
        for piece in BufReader::new(stdout).split(b'\r') {
            let piece = piece.map_err(io_err)?;
            if let Some(percent) = parse_progress(&String::from_utf8_lossy(&piece)) {
                span.report(percent / 100.0);
            }
        }
    }
    let status = child.wait().map_err(io_err)?;
    let stderr = stderr
        .and_then(|t| t.join().ok())
        .unwrap_or_default()
        .trim()
        .to_string();
    if !status.success() {
        return Err(QemuError::Failed {
            what: "convert",
            status,
            stderr,
        });
    }
    span.report(1.0);
    Ok(())
}

/// The percentage in a `qemu-img -p` line: `(45.34/100%)` → 45.34.
pub fn parse_progress(line: &str) -> Option<f64> {
    let start = line.rfind('(')?;
    let rest = &line[start + 1..];
    let number = rest.strip_suffix("/100%)").or_else(|| {
        let end = rest.find("/100%)")?;
        Some(&rest[..end])
    })?;
    let value: f64 = number.trim().parse().ok()?;
    (0.0..=100.0).contains(&value).then_some(value)
}

fn spawn_error(what: &'static str, e: io::Error) -> QemuError {
    if e.kind() == io::ErrorKind::NotFound {
        QemuError::NotInstalled
    } else {
        QemuError::Io { what, source: e }
    }
}

/// Ends the child with the thread that started it: a stopped importer leaves no qemu-img
/// writing behind it.
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only prctl, which is
    // async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Upstream's limits on `qemu-img info`.
fn limit(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only setrlimit, which
    // is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(|| {
            for (resource, value) in [
                (libc::RLIMIT_AS, INFO_MAX_MEMORY),
                (libc::RLIMIT_CPU, INFO_MAX_CPU_SECONDS),
            ] {
                let limit = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                // SAFETY: `limit` is a valid rlimit that outlives the call.
                if libc::setrlimit(resource, &limit) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn progress_lines_parse() {
        assert_eq!(parse_progress("    (45.34/100%)"), Some(45.34));
        assert_eq!(parse_progress("\n    (100.00/100%)\n"), Some(100.0));
        assert_eq!(parse_progress("(0.00/100%)"), Some(0.0));
        assert_eq!(parse_progress("(101.00/100%)"), None);
        assert_eq!(parse_progress("qemu-img: error"), None);
        assert_eq!(parse_progress("(abc/100%)"), None);
    }

    fn info(format: &str, size: u64, backing: Option<&str>) -> ImageInfo {
        ImageInfo {
            format: format.into(),
            virtual_size: size,
            backing_filename: backing.map(str::to_string),
            filename: "a".into(),
            format_specific: None,
        }
    }

    #[test]
    fn external_files_are_refused() {
        let json = r#"{"virtual-size": 1, "filename": "y.qcow2", "format": "qcow2",
            "format-specific": {"type": "qcow2", "data": {"data-file": "/etc/shadow"}}}"#;
        let i: ImageInfo = serde_json::from_str(json).unwrap();
        let e = validate(&i, DiskFormat::Qcow2, 100, "x").unwrap_err();
        assert!(
            e.to_string()
                .contains("refers to other files (/etc/shadow)"),
            "{e}"
        );
        let json = r#"{"virtual-size": 1, "filename": "v.vmdk", "format": "vmdk",
            "format-specific": {"type": "vmdk", "data": {"extents": [
                {"filename": "v.vmdk"}, {"filename": "/dev/sda"}]}}}"#;
        let i: ImageInfo = serde_json::from_str(json).unwrap();
        assert_eq!(i.external_files(), vec!["/dev/sda".to_string()]);
    }

    #[test]
    fn validation_is_upstreams() {
        let q = DiskFormat::Qcow2;
        assert!(validate(&info("qcow2", 100, None), q, 100, "x").is_ok());
        let e = validate(&info("qcow2", 101, None), q, 100, "the claim").unwrap_err();
        assert_eq!(
            e.to_string(),
            "virtual image size 101 is larger than the reported available storage 100 (the claim). A larger PVC is required"
        );
        let e = validate(&info("qcow2", 1, Some("base.qcow2")), q, 100, "x").unwrap_err();
        assert!(e.to_string().contains("backing file (base.qcow2)"), "{e}");
        assert!(validate(&info("qcow2", 1, Some("")), q, 100, "x").is_ok());
        let e = validate(&info("raw", 1, None), q, 100, "x").unwrap_err();
        assert!(matches!(e, QemuError::FormatMismatch { .. }));
    }

    #[test]
    fn info_json_parses() {
        let json = r#"{"virtual-size": 67108864, "filename": "a.qcow2", "format": "qcow2",
            "backing-filename": "b.qcow2", "actual-size": 200704, "dirty-flag": false}"#;
        let i: ImageInfo = serde_json::from_str(json).unwrap();
        assert_eq!(i.backing_filename.as_deref(), Some("b.qcow2"));
        assert_eq!((i.virtual_size, i.filename.as_str()), (67108864, "a.qcow2"));
    }

    proptest! {
        #[test]
        fn any_line_parses_or_not_without_panicking(line in ".*") {
            if let Some(v) = parse_progress(&line) {
                prop_assert!((0.0..=100.0).contains(&v));
            }
        }

        #[test]
        fn every_progress_value_round_trips(hundredths in 0u32..=10_000) {
            let value = f64::from(hundredths) / 100.0;
            let line = format!("    ({value:.2}/100%)\r");
            prop_assert_eq!(parse_progress(line.trim_end_matches('\r')), Some(value));
        }
    }
}
