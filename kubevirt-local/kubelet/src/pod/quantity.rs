//! Kubernetes resource quantities as the kubelet needs them: CPU in millicores, memory in bytes.

/// Errors parsing a quantity.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {value:?} is not a valid quantity (e.g. 500m, 2, 128Mi, 1G)")]
pub struct QuantityError {
    /// The field path.
    pub field: String,
    /// The value.
    pub value: String,
}

fn split(s: &str) -> (&str, &str) {
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    s.split_at(at)
}

/// A quantity as a number of base units (`1Ki` → 1024, `500m` → 0.5).
pub fn parse(field: &str, value: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError {
        field: field.to_string(),
        value: value.to_string(),
    };
    let (num, suffix) = split(value.trim());
    let n: f64 = num.parse().map_err(|_| err())?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        _ => return Err(err()),
    };
    Ok(n * mult)
}

/// CPU in millicores.
pub fn millicores(field: &str, value: &str) -> Result<i64, QuantityError> {
    Ok((parse(field, value)? * 1000.0).ceil() as i64)
}

/// Memory in bytes.
pub fn bytes(field: &str, value: &str) -> Result<i64, QuantityError> {
    Ok(parse(field, value)?.ceil() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(millicores("c", "500m"), Ok(500));
        assert_eq!(millicores("c", "2"), Ok(2000));
        assert_eq!(millicores("c", "0.1"), Ok(100));
        assert_eq!(bytes("m", "128Mi"), Ok(128 << 20));
        assert_eq!(bytes("m", "1G"), Ok(1_000_000_000));
        assert!(bytes("spec.containers[0].resources.limits.memory", "12XB").is_err());
        assert!(bytes("m", "").is_err());
    }
}
