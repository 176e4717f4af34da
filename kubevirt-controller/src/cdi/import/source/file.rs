//! A local file as a source (tests, and the upload server's received data).

use super::{Source, SourceError, Stream};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Reads a local file.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// The file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> FileSource {
        FileSource { path: path.into() }
    }
}

impl Source for FileSource {
    fn open(&mut self) -> Result<Stream, SourceError> {
        let err = |source| SourceError::File {
            path: self.path.display().to_string(),
            source,
        };
        let file = File::open(&self.path).map_err(err)?;
        let length = file.metadata().map_err(err)?.len();
        Ok(Stream {
            reader: Box::new(file),
            length: Some(length),
        })
    }

    fn local_path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_with_its_length_or_names_the_missing_file() {
        let dir = kubevirt_testsupport::tempdir("filesrc");
        std::fs::write(dir.join("a"), b"12345").unwrap();
        let mut s = FileSource::new(dir.join("a"));
        assert_eq!(s.open().unwrap().length, Some(5));
        assert_eq!(s.local_path(), Some(dir.join("a").as_path()));
        let e = FileSource::new(dir.join("nope")).open().unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
