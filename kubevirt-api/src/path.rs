//! Field paths in Kubernetes notation, as error messages and Status causes use them.

use std::fmt;

/// A field path in Kubernetes notation: `spec.template.spec.domain.devices.disks[0].name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldPath(String);

impl FieldPath {
    /// The empty path (the document root).
    pub fn root() -> Self {
        Self::default()
    }

    /// The path of a field below this one.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// The path of a list element below this one.
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// The path of a map entry below this one (`labels[app]`).
    pub fn key(&self, k: &str) -> Self {
        Self(format!("{}[{k}]", self.0))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<root>")
        } else {
            f.write_str(&self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kubernetes_notation() {
        let p = FieldPath::root()
            .field("spec")
            .field("disks")
            .index(2)
            .field("name");
        assert_eq!(p.to_string(), "spec.disks[2].name");
        assert_eq!(
            FieldPath::root().field("labels").key("app").to_string(),
            "labels[app]"
        );
        assert_eq!(FieldPath::root().to_string(), "<root>");
    }
}
