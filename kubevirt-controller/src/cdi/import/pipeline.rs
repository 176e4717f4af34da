//! The import itself, as upstream's data processor: open the source, unwrap it, and either
//! stream raw bytes straight into the target or, for an image `qemu-img` must convert, download
//! it to scratch space (unless it already is a local file), validate it and convert it into the
//! target; then grow the disk to the room there is.

use super::archive::{self, ArchiveError};
use super::checksum::{Checksum, ChecksumError, Verifier};
use super::format::{DiskFormat, Wrapper};
use super::progress::{CountingReader, Progress, Span};
use super::qemu::{self, QemuError};
use super::source::{Source, SourceError};
use super::target::{self, Capacity, PendingDisk, ScratchFile, Target, TargetError};
use super::unwrap::{self, UnwrapError};
use super::writer::{self, Destination, WriteError};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// What the data is meant to be (a DataVolume's `contentType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    /// A disk image (`kubevirt`, the default).
    #[default]
    Kubevirt,
    /// A tar archive unpacked into the volume (`archive`).
    Archive,
}

/// Where the data comes from.
#[derive(Debug)]
pub enum ImportSource {
    /// No data: an empty disk of the room there is (a DataVolume's `blank` source).
    Blank,
    /// A source's bytes.
    Data(Box<dyn Source>),
}

/// One import.
#[derive(Debug)]
pub struct ImportRequest {
    /// The data.
    pub source: ImportSource,
    /// What it is.
    pub content_type: ContentType,
    /// Where it goes.
    pub target: Target,
    /// The disk's size (the claim's request); `None`: all the room there is.
    pub requested_size: Option<u64>,
    /// The share of a Filesystem volume kept for the filesystem (0.055 by default).
    pub filesystem_overhead: f64,
    /// Allocate every block of a Filesystem disk.
    pub preallocation: bool,
    /// Where downloads wait for conversion (default: the target's directory on a Filesystem
    /// volume, the system's temporary directory for a Block one).
    pub scratch_dir: Option<PathBuf>,
    /// The digest the source's bytes must have (a DataVolume's `checksum`).
    pub checksum: Option<Checksum>,
    /// Raised as the import goes.
    pub progress: Progress,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    /// The image's format (`None`: blank or archive).
    pub format: Option<DiskFormat>,
    /// The wrappers removed, outermost first.
    pub wrappers: Vec<Wrapper>,
    /// The disk's size in bytes (0 for an archive).
    pub disk_size: u64,
    /// Whether every block was allocated.
    pub preallocation_applied: bool,
}

/// Why an import failed.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The source could not be opened.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The data could not be unwrapped or is no disk image.
    #[error(transparent)]
    Unwrap(#[from] UnwrapError),
    /// The target is unusable.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Copying failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// qemu-img refused or failed.
    #[error(transparent)]
    Qemu(#[from] QemuError),
    /// Unpacking an archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The data does not match the checksum.
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    /// An archive cannot go to a device.
    #[error("contentType archive needs a Filesystem volume; this one is Block")]
    ArchiveToBlock,
    /// A blank archive makes no sense (upstream's message).
    #[error("Cannot create empty disk with content type archive")]
    BlankArchive,
}

/// Runs the import.
pub fn import(request: ImportRequest) -> Result<ImportOutcome, ImportError> {
    let ImportRequest {
        source,
        content_type,
        target,
        requested_size,
        filesystem_overhead,
        preallocation,
        scratch_dir,
        checksum,
        progress,
    } = request;
    let outcome = match (source, content_type) {
        (ImportSource::Blank, ContentType::Archive) => return Err(ImportError::BlankArchive),
        (ImportSource::Data(source), ContentType::Archive) => {
            let Target::Filesystem { dir } = &target else {
                return Err(ImportError::ArchiveToBlock);
            };
            archive_into(source, checksum, dir, &progress)?
        }
        (source, ContentType::Kubevirt) => {
            let capacity = target.capacity(requested_size, filesystem_overhead)?;
            let job = DiskJob {
                target: &target,
                capacity: &capacity,
                preallocation: preallocation && matches!(target, Target::Filesystem { .. }),
                scratch_dir,
                checksum,
                progress: &progress,
            };
            match source {
                ImportSource::Blank => job.blank()?,
                ImportSource::Data(source) => job.disk(source)?,
            }
        }
    };
    progress.complete();
    Ok(outcome)
}

fn archive_into(
    mut source: Box<dyn Source>,
    checksum: Option<Checksum>,
    dir: &Path,
    progress: &Progress,
) -> Result<ImportOutcome, ImportError> {
    let (reader, verifier) = open(source.as_mut(), checksum, progress.whole())?;
    let tar = unwrap::unwrap_archive(reader)?;
    let staged = archive::stage(tar, dir)?;
    verify(&verifier)?;
    let placed = staged.place()?;
    tracing::info!(entries = placed, dir = %dir.display(), "archive unpacked");
    Ok(ImportOutcome {
        format: None,
        wrappers: Vec::new(),
        disk_size: 0,
        preallocation_applied: false,
    })
}

/// Opens the source: its stream counted against its length if known, and hashed if a
/// checksum is expected.
fn open(
    source: &mut dyn Source,
    checksum: Option<Checksum>,
    span: Span,
) -> Result<(Box<dyn std::io::Read>, Option<Verifier>), ImportError> {
    let stream = source.open()?;
    let (reader, verifier): (Box<dyn std::io::Read>, _) = match checksum {
        Some(checksum) => {
            let verifier = Verifier::new(stream.reader, checksum);
            (Box::new(verifier.clone()), Some(verifier))
        }
        None => (stream.reader, None),
    };
    let reader: Box<dyn std::io::Read> = match stream.length {
        Some(total) if total > 0 => Box::new(CountingReader::new(reader, total, span)),
        _ => reader,
    };
    Ok((reader, verifier))
}

fn verify(verifier: &Option<Verifier>) -> Result<(), ChecksumError> {
    verifier.as_ref().map_or(Ok(()), Verifier::verify)
}

struct DiskJob<'a> {
    target: &'a Target,
    capacity: &'a Capacity,
    preallocation: bool,
    scratch_dir: Option<PathBuf>,
    checksum: Option<Checksum>,
    progress: &'a Progress,
}

impl DiskJob<'_> {
    fn blank(&self) -> Result<ImportOutcome, ImportError> {
        let preallocation_applied = match self.target {
            Target::Filesystem { dir } => {
                let pending = PendingDisk::start(dir)?;
                pending.open()?;
                pending.finish_size(self.capacity.bytes, self.preallocation)?;
                pending.commit()?;
                self.preallocation
            }
            // Upstream always preallocates (zeroes) a blank Block volume.
            Target::Block { device } => {
                target::zero_device(device, self.capacity.bytes)?;
                true
            }
        };
        Ok(ImportOutcome {
            format: None,
            wrappers: Vec::new(),
            disk_size: self.capacity.bytes,
            preallocation_applied,
        })
    }

    fn disk(&self, mut source: Box<dyn Source>) -> Result<ImportOutcome, ImportError> {
        // No disk.img from before survives a failure of this import.
        let pending = match self.target {
            Target::Filesystem { dir } => Some(PendingDisk::start(dir)?),
            Target::Block { .. } => None,
        };
        let download = self.progress.whole();
        let (reader, verifier) = open(source.as_mut(), self.checksum.clone(), download.clone())?;
        let unwrapped = unwrap::unwrap_disk(reader)?;
        let (format, wrappers) = (unwrapped.format, unwrapped.wrappers.clone());
        tracing::info!(source = %source.describe(), %format, ?wrappers, "importing");
        let dest_path = pending
            .as_ref()
            .map_or_else(|| self.target.disk_path(), |p| p.path().to_path_buf());
        let is_device = pending.is_none();
        if format.needs_conversion() {
            let local = source
                .local_path()
                .filter(|_| wrappers.is_empty())
                .map(Path::to_path_buf);
            self.convert(
                unwrapped, local, &verifier, &download, &dest_path, is_device,
            )?;
        } else {
            self.stream_raw(unwrapped, &verifier, &dest_path, is_device)?;
        }
        let disk_size = match pending {
            Some(pending) => {
                pending.finish_size(self.capacity.bytes, self.preallocation)?;
                let done = pending.commit()?;
                std::fs::metadata(&done)
                    .map(|m| m.len())
                    .unwrap_or(self.capacity.bytes)
            }
            None => self.capacity.bytes,
        };
        Ok(ImportOutcome {
            format: Some(format),
            wrappers,
            disk_size,
            preallocation_applied: self.preallocation,
        })
    }

    /// Raw bytes straight into the target.
    fn stream_raw(
        &self,
        unwrapped: unwrap::Unwrapped,
        verifier: &Option<Verifier>,
        dest_path: &Path,
        is_device: bool,
    ) -> Result<(), ImportError> {
        let io_err = |what| {
            let path = dest_path.to_path_buf();
            move |source| TargetError::Io { what, path, source }
        };
        let mut reader = unwrapped.reader;
        let file = OpenOptions::new()
            .write(true)
            .create(!is_device)
            .truncate(false)
            .open(dest_path)
            .map_err(io_err("opening"))?;
        writer::copy_raw(
            &mut reader,
            &Destination {
                file: &file,
                path: dest_path,
                is_device,
                available: self.capacity.bytes,
                explanation: &self.capacity.explanation,
            },
        )?;
        verify(verifier)?;
        if is_device {
            file.sync_all().map_err(io_err("flushing"))?;
        }
        Ok(())
    }

    /// An image qemu-img converts: read in place if `local`, else downloaded to scratch space
    /// first; verified and validated before qemu-img converts it into `dest_path`.
    fn convert(
        &self,
        unwrapped: unwrap::Unwrapped,
        local: Option<PathBuf>,
        verifier: &Option<Verifier>,
        download: &Span,
        dest_path: &Path,
        is_device: bool,
    ) -> Result<(), ImportError> {
        let format = unwrapped.format;
        let mut scratch = None;
        let input = match local {
            Some(path) => path,
            None => {
                download.end_at(50.0);
                let (file, handle) = ScratchFile::create(&self.scratch_dir())?;
                let mut reader = unwrapped.reader;
                writer::copy_raw(
                    &mut reader,
                    &Destination {
                        file: &handle,
                        path: file.path(),
                        is_device: false,
                        available: u64::MAX,
                        explanation: "scratch space",
                    },
                )?;
                let path = file.path().to_path_buf();
                scratch = Some(file);
                path
            }
        };
        // Before qemu-img reads a byte of it.
        verify(verifier)?;
        let info = qemu::info(&input, format)?;
        qemu::validate(
            &info,
            format,
            self.capacity.bytes,
            &self.capacity.explanation,
        )?;
        let from = if scratch.is_some() { 50.0 } else { 0.0 };
        let span = self.progress.span(from, 100.0);
        qemu::convert(&input, format, dest_path, is_device, &span)?;
        Ok(())
    }

    fn scratch_dir(&self) -> PathBuf {
        match (&self.scratch_dir, self.target) {
            (Some(dir), _) => dir.clone(),
            (None, Target::Filesystem { dir }) => dir.clone(),
            (None, Target::Block { .. }) => std::env::temp_dir(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdi::import::source::file::FileSource;

    const MIB: u64 = 1 << 20;

    fn request(source: ImportSource, content_type: ContentType, target: Target) -> ImportRequest {
        ImportRequest {
            source,
            content_type,
            target,
            requested_size: Some(4 * MIB),
            filesystem_overhead: 0.0,
            preallocation: false,
            scratch_dir: None,
            checksum: None,
            progress: Progress::new(),
        }
    }

    #[test]
    fn upstreams_refusals() {
        let dir = kubevirt_testsupport::tempdir("pipeline");
        let fs = Target::Filesystem {
            dir: dir.to_path_buf(),
        };
        let e = import(request(ImportSource::Blank, ContentType::Archive, fs)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Cannot create empty disk with content type archive"
        );
        let dev = dir.join("dev");
        std::fs::File::create(&dev).unwrap().set_len(MIB).unwrap();
        let file = ImportSource::Data(Box::new(FileSource::new(&dev)));
        let block = Target::Block { device: dev };
        let e = import(request(file, ContentType::Archive, block)).unwrap_err();
        assert!(matches!(e, ImportError::ArchiveToBlock), "{e}");
    }

    #[test]
    fn a_raw_file_lands_whole_and_grown_to_the_room() {
        let dir = kubevirt_testsupport::tempdir("pipeline");
        let src = dir.join("src.img");
        let data: Vec<u8> = (0..MIB as usize + 7).map(|i| (i % 253) as u8 + 1).collect();
        std::fs::write(&src, &data).unwrap();
        let claim = dir.join("claim");
        std::fs::create_dir(&claim).unwrap();
        let req = request(
            ImportSource::Data(Box::new(FileSource::new(&src))),
            ContentType::Kubevirt,
            Target::Filesystem { dir: claim.clone() },
        );
        let progress = req.progress.clone();
        let outcome = import(req).unwrap();
        assert_eq!(outcome.format, Some(DiskFormat::Raw));
        assert_eq!(outcome.disk_size, 4 * MIB);
        let disk = std::fs::read(claim.join("disk.img")).unwrap();
        assert_eq!(&disk[..data.len()], &data[..]);
        assert!(disk[data.len()..].iter().all(|b| *b == 0));
        assert_eq!(progress.percent(), 100.0);
    }
}
