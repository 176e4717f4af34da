//! Building import requests for the tests.

use kubevirt_controller::cdi::import::source::http::{HttpOptions, HttpSource};
use kubevirt_controller::cdi::import::{
    ContentType, ImportError, ImportOutcome, ImportRequest, ImportSource, Progress, Target, import,
};
use std::path::Path;

pub const OVERHEAD: f64 = 0.055;

pub fn http(url: &str) -> ImportSource {
    http_with(url, HttpOptions::default())
}

pub fn http_with(url: &str, options: HttpOptions) -> ImportSource {
    ImportSource::Data(Box::new(HttpSource::new(url, options).unwrap()))
}

pub fn request(
    target: Target,
    source: ImportSource,
    size: u64,
    progress: &Progress,
) -> ImportRequest {
    ImportRequest {
        source,
        content_type: ContentType::Kubevirt,
        target,
        requested_size: Some(size),
        filesystem_overhead: OVERHEAD,
        preallocation: false,
        scratch_dir: None,
        checksum: None,
        progress: progress.clone(),
    }
}

pub fn into_dir(
    dir: &Path,
    source: ImportSource,
    size: u64,
) -> (Result<ImportOutcome, ImportError>, Progress) {
    let progress = Progress::new();
    let target = Target::Filesystem {
        dir: dir.to_path_buf(),
    };
    (import(request(target, source, size, &progress)), progress)
}

pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
