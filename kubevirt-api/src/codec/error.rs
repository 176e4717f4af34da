use thiserror::Error;

/// Why a document could not be decoded into the typed API.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DecodeError {
    /// The text is not valid YAML or JSON.
    #[error("not valid YAML/JSON: {0}")]
    Syntax(String),
    /// The document is not an object with `apiVersion` and `kind`.
    #[error("{0}: required field is missing (every document needs apiVersion and kind)")]
    MissingTypeMeta(&'static str),
    /// `apiVersion`/`kind` name no kind this crate knows.
    #[error("unknown kind {kind} in {api_version}: not a KubeVirt or CDI kind this API serves")]
    UnknownKind {
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
    /// A field has the wrong type, or a required field is missing.
    #[error("{path}: {message}")]
    Invalid {
        /// Field path, e.g. `spec.template.spec.domain.cpu.cores`.
        path: String,
        /// What serde reported.
        message: String,
    },
    /// Fields the typed API does not have (strict field validation).
    #[error("{}", unknown_message(.0))]
    UnknownFields(Vec<String>),
}

fn unknown_message(paths: &[String]) -> String {
    paths
        .iter()
        .map(|p| format!("{p}: unknown field \"{}\"", last_segment(p)))
        .collect::<Vec<_>>()
        .join("; ")
}

fn last_segment(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}
