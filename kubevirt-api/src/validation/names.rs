//! Name and address formats.

/// An RFC 1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// An RFC 1123 subdomain: dot-separated labels, ≤ 253.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A MAC address as upstream accepts it: six hex octets separated by ':' or '-'.
pub fn is_mac_address(s: &str) -> bool {
    let sep = if s.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = s.split(sep).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn labels_and_macs() {
        assert!(is_dns1123_label("vm-1"));
        assert!(!is_dns1123_label("-vm"));
        assert!(!is_dns1123_label("VM"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(is_mac_address("de:ad:00:00:be:af"));
        assert!(is_mac_address("DE-AD-00-00-BE-AF"));
        assert!(!is_mac_address("de:ad:00:00:be"));
        assert!(!is_mac_address("de:ad:00:00:be:ag"));
    }

    proptest! {
        #[test]
        fn generated_labels_are_labels(s in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            prop_assert!(is_dns1123_label(&s));
        }
    }
}
