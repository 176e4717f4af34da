//! The VMI facts the metadata files carry.

use kubevirt_api::core::v1::VirtualMachineInstance;

/// Upstream's limit on a hostname taken from the VMI name (a DNS label).
const MAX_HOSTNAME_LEN: usize = 63;

/// Who the VM is, as the metadata files say it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmiIdentity {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.hostname`, when set.
    pub hostname: Option<String>,
}

impl VmiIdentity {
    /// The identity of `vmi`; missing metadata fields are empty.
    pub fn from_vmi(vmi: &VirtualMachineInstance) -> VmiIdentity {
        VmiIdentity {
            name: vmi.metadata.name.clone().unwrap_or_default(),
            namespace: vmi.metadata.namespace.clone().unwrap_or_default(),
            uid: vmi.metadata.uid.clone().unwrap_or_default(),
            hostname: vmi.spec.hostname.clone().filter(|h| !h.is_empty()),
        }
    }

    /// The cloud-init instance id: `<name>.<namespace>`, as upstream generates it. It stays the
    /// same across restarts of the same VMI name, so cloud-init runs once per VM.
    pub fn instance_id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }

    /// The guest's hostname (upstream's `dns.SanitizeHostname`): `spec.hostname` when set,
    /// otherwise the VMI name up to its first `.`, cut to 63 characters.
    pub fn hostname(&self) -> String {
        if let Some(hostname) = &self.hostname {
            return hostname.clone();
        }
        let first = self.name.split('.').next().unwrap_or_default();
        first.chars().take(MAX_HOSTNAME_LEN).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, hostname: Option<&str>) -> VmiIdentity {
        VmiIdentity {
            name: name.to_owned(),
            namespace: "default".to_owned(),
            uid: "u".to_owned(),
            hostname: hostname.map(str::to_owned),
        }
    }

    #[test]
    fn instance_id_is_name_dot_namespace() {
        assert_eq!(identity("vm1", None).instance_id(), "vm1.default");
    }

    #[test]
    fn hostname_prefers_spec_hostname() {
        assert_eq!(identity("vm1", Some("host")).hostname(), "host");
        assert_eq!(identity("vm1", None).hostname(), "vm1");
    }

    #[test]
    fn hostname_from_name_is_a_dns_label() {
        assert_eq!(identity("a.b.c", None).hostname(), "a");
        let long = "x".repeat(70);
        assert_eq!(identity(&long, None).hostname().len(), 63);
    }
}
