//! Kubernetes resource quantities (`128Mi`, `1G`, `500m`, `1.5Gi`, `1e3`) as exact numbers.
//!
//! Memory sizes in a VMI (`domain.memory.guest`, `resources.requests.memory`) are quantities; the
//! launcher needs them in bytes and validation compares them. Values are kept as an exact rational
//! `mantissa × 10^exp10 × 2^exp2` until converted, so `0.5Gi` and `512Mi` compare equal.

use thiserror::Error;

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// The text does not follow the quantity grammar.
    #[error(
        "quantity {0:?} is not valid: expected a number with an optional suffix (Ki, Mi, Gi, Ti, Pi, Ei, m, k, M, G, T, P, E or an exponent like e3)"
    )]
    Syntax(String),
    /// The value does not fit the requested unit.
    #[error("quantity {0:?} is out of range")]
    Range(String),
}

/// A parsed quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// Digits without the decimal point.
    mantissa: u128,
    /// Power of ten (negative for fractions and milli).
    exp10: i32,
    /// Power of two (binary suffixes).
    exp2: u32,
}

impl Quantity {
    /// Parse `text`.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError::Syntax(text.to_string());
        let s = text.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let mut mantissa: u128 = 0;
        for d in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(d - b'0')))
                .ok_or_else(|| QuantityError::Range(text.to_string()))?;
        }
        let frac_digits = i32::try_from(frac_part.len()).map_err(|_| err())?;
        let (exp10, exp2) = match suffix {
            "" => (0, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            s if s.starts_with(['e', 'E']) => {
                let e: i32 = s[1..].parse().map_err(|_| err())?;
                if !(-100..=100).contains(&e) {
                    return Err(QuantityError::Range(text.to_string()));
                }
                (e, 0)
            }
            _ => return Err(err()),
        };
        Ok(Self {
            negative,
            mantissa,
            exp10: exp10 - frac_digits,
            exp2,
        })
    }

    /// The value as a whole number, rounded up (Kubernetes rounds fractional bytes up).
    pub fn ceil_i128(&self) -> Option<i128> {
        let mut num = self.mantissa.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let mut den: u128 = 1;
        if self.exp10 >= 0 {
            num = num.checked_mul(10u128.checked_pow(self.exp10.unsigned_abs())?)?;
        } else {
            den = 10u128.checked_pow(self.exp10.unsigned_abs())?;
        }
        let v = i128::try_from(num.div_ceil(den)).ok()?;
        Some(if self.negative { -v } else { v })
    }

    /// The value in thousandths, rounded up (`100m` -> 100, `1` -> 1000): how Kubernetes compares
    /// CPU requests (`MilliValue`). `None` if it does not fit an `i128`.
    pub fn ceil_milli_i128(&self) -> Option<i128> {
        Self {
            exp10: self.exp10.checked_add(3)?,
            ..*self
        }
        .ceil_i128()
    }

    /// The value in bytes (or units), for sizes: must be non-negative and fit a `u64`.
    pub fn to_bytes(&self) -> Result<u64, QuantityError> {
        let range = || QuantityError::Range(self.to_string());
        let v = self.ceil_i128().ok_or_else(range)?;
        u64::try_from(v).map_err(|_| range())
    }
}

impl std::fmt::Display for Quantity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        write!(f, "{sign}{}e{}*2^{}", self.mantissa, self.exp10, self.exp2)
    }
}

/// Parse a k8s-openapi [`Quantity`](k8s_openapi::apimachinery::pkg::api::resource::Quantity) into
/// bytes.
pub fn bytes_of(
    q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
) -> Result<u64, QuantityError> {
    Quantity::parse(&q.0)?.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn milli_values_round_up() {
        let m = |s: &str| Quantity::parse(s).unwrap().ceil_milli_i128().unwrap();
        assert_eq!(
            (m("100m"), m("1"), m("1.5"), m("1n"), m("2Ki")),
            (100, 1000, 1500, 1, 2_048_000)
        );
    }

    #[test]
    fn parses_the_usual_forms() {
        let b = |s: &str| Quantity::parse(s).unwrap().to_bytes().unwrap();
        assert_eq!(b("128Mi"), 128 << 20);
        assert_eq!(b("1Gi"), 1 << 30);
        assert_eq!(b("0.5Gi"), 512 << 20);
        assert_eq!(b("1G"), 1_000_000_000);
        assert_eq!(b("1e3"), 1000);
        assert_eq!(b("1500m"), 2);
        assert_eq!(b("64"), 64);
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "Mi", "1..2", "1Xi", "1e", "abc", "1 Gi", "1e999"] {
            assert!(Quantity::parse(s).is_err(), "{s:?} accepted");
        }
        assert!(Quantity::parse("-1Gi").unwrap().to_bytes().is_err());
    }

    proptest! {
        #[test]
        fn binary_suffixes_scale_exactly(n in 0u64..1_000_000, i in 0usize..4) {
            let (suffix, shift) = [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40)][i];
            let q = Quantity::parse(&format!("{n}{suffix}")).unwrap();
            prop_assert_eq!(q.to_bytes().unwrap(), n << shift);
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            if let Ok(q) = Quantity::parse(&s) {
                let _ = q.to_bytes();
            }
        }
    }
}
