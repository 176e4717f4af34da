//! The importer's result, written where the kubelet reads a container's termination message
//! (`/dev/termination-log`), as upstream's importer writes it: on success the JSON of CDI's
//! `TerminationMessage` (`{"preallocationApplied":false,"message":"Import Complete"}`), on
//! failure `Unable to process data: <the error>`. The kubelet keeps 4096 bytes at most.

use serde::Serialize;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Where the kubelet looks by default.
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";
/// The most the kubelet keeps.
pub const MAX_LEN: usize = 4096;
/// The message of a finished import.
pub const IMPORT_COMPLETE: &str = "Import Complete";

/// Upstream's `common.TerminationMessage` (field order and names kept).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminationMessage {
    /// The import needs scratch space it was not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scratch_space_required: Option<bool>,
    /// The disk's blocks were allocated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preallocation_applied: Option<bool>,
    /// A multi-stage import's deadline passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_passed: Option<bool>,
    /// Labels for the claim (from a registry image's environment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// What happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The message of a successful import.
pub fn success(preallocation_applied: bool) -> String {
    let message = TerminationMessage {
        preallocation_applied: Some(preallocation_applied),
        message: Some(IMPORT_COMPLETE.to_string()),
        ..TerminationMessage::default()
    };
    // Serializing a struct of strings and booleans cannot fail.
    serde_json::to_string(&message).unwrap_or_else(|_| IMPORT_COMPLETE.to_string())
}

/// The message of a failed import.
pub fn failure(error: &dyn std::fmt::Display) -> String {
    truncate(format!("Unable to process data: {error}"))
}

/// Cuts `text` to [`MAX_LEN`] bytes, on a character boundary.
pub fn truncate(mut text: String) -> String {
    if text.len() > MAX_LEN {
        let mut end = MAX_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Writes `text` to `path`.
pub fn write(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_are_upstreams() {
        assert_eq!(
            success(false),
            r#"{"preallocationApplied":false,"message":"Import Complete"}"#
        );
        assert_eq!(failure(&"boom"), "Unable to process data: boom");
    }

    proptest! {
        #[test]
        fn failures_fit_the_kubelets_limit(text in ".{0,3000}") {
            let long = text.repeat(3);
            let m = failure(&long);
            prop_assert!(m.len() <= MAX_LEN);
            prop_assert!(m.starts_with("Unable to process data: "));
        }
    }
}
