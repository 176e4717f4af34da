use crate::path::FieldPath;
use std::fmt;

/// The kind of a validation failure, as Kubernetes `StatusCause` reasons name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A required value is missing.
    Required,
    /// The value is not acceptable.
    Invalid,
    /// The value duplicates another.
    Duplicate,
    /// The value is not one of the supported values.
    NotSupported,
    /// The field may not be set (in this combination).
    Forbidden,
    /// The value refers to something that does not exist.
    NotFound,
}

impl ErrorKind {
    /// The Kubernetes `StatusCause.reason` for this kind.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::NotFound => "FieldValueNotFound",
        }
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: `spec.template.spec.domain.devices.disks[1].name`.
    pub path: FieldPath,
    /// What kind of problem.
    pub kind: ErrorKind,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl FieldError {
    fn new(path: FieldPath, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            path,
            kind,
            message: message.into(),
        }
    }

    /// A missing value.
    pub fn required(path: FieldPath, message: &str) -> Self {
        Self::new(path, ErrorKind::Required, message)
    }

    /// An unacceptable value.
    pub fn invalid(path: FieldPath, message: &str) -> Self {
        Self::new(path, ErrorKind::Invalid, message)
    }

    /// A duplicated value.
    pub fn duplicate(path: FieldPath, message: &str) -> Self {
        Self::new(path, ErrorKind::Duplicate, message)
    }

    /// A field that may not be set.
    pub fn forbidden(path: FieldPath, message: &str) -> Self {
        Self::new(path, ErrorKind::Forbidden, message)
    }

    /// A reference to something that does not exist.
    pub fn not_found(path: FieldPath, message: &str) -> Self {
        Self::new(path, ErrorKind::NotFound, message)
    }

    /// A change refused while something holds the object (upstream reports these as
    /// `FieldValueNotSupported` with its own message).
    pub fn locked(path: FieldPath, message: String) -> Self {
        Self::new(path, ErrorKind::NotSupported, message)
    }

    /// A value outside `allowed`.
    pub fn not_supported(path: FieldPath, value: &str, allowed: &[&str]) -> Self {
        let list = allowed
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Self::new(
            path,
            ErrorKind::NotSupported,
            format!("unsupported value {value:?}: supported values are {list}"),
        )
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FieldError {}
