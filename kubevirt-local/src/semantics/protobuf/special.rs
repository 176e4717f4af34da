//! Messages whose JSON form is not an object: times, durations, quantities, int-or-string and
//! embedded JSON.

use super::wire::{Reader, Wire};
use super::{ProtobufError, malformed, text};
use serde_json::{Value, json};

/// The varint and bytes fields of a small message, by number.
fn fields<'a>(b: &'a [u8], path: &str) -> Result<Vec<(u64, Wire<'a>)>, ProtobufError> {
    let mut r = Reader::new(b);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.field().map_err(|e| malformed(path, e))?);
    }
    Ok(out)
}

fn varint(fs: &[(u64, Wire<'_>)], num: u64) -> i64 {
    fs.iter()
        .rev()
        .find_map(|(n, w)| match w {
            Wire::Varint(v) if *n == num => Some(*v as i64),
            _ => None,
        })
        .unwrap_or(0)
}

fn bytes<'a>(fs: &[(u64, Wire<'a>)], num: u64) -> Option<&'a [u8]> {
    fs.iter().rev().find_map(|(n, w)| match w {
        Wire::Bytes(b) if *n == num => Some(*b),
        _ => None,
    })
}

/// `Time` / `MicroTime` (`seconds` = 1, `nanos` = 2). The zero time is `null`, as Go marshals it.
pub(super) fn time(b: &[u8], micro: bool, path: &str) -> Result<Value, ProtobufError> {
    let fs = fields(b, path)?;
    let (secs, nanos) = (varint(&fs, 1), varint(&fs, 2));
    if secs == 0 && nanos == 0 {
        return Ok(Value::Null);
    }
    let nanos = i32::try_from(nanos).map_err(|_| malformed(path, "nanos out of range"))?;
    let ts = jiff::Timestamp::new(secs, if micro { nanos } else { 0 })
        .map_err(|_| malformed(path, "time out of range"))?;
    Ok(json!(if micro {
        ts.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
    } else {
        ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }))
}

/// `Duration` (`duration` = 1, nanoseconds) as Go's `time.Duration.String()`.
pub(super) fn duration(b: &[u8], path: &str) -> Result<Value, ProtobufError> {
    let ns = varint(&fields(b, path)?, 1);
    Ok(json!(go_duration(ns)))
}

fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    if ns < 1_000_000_000 {
        let (unit, div) = match ns {
            n if n < 1_000 => ("ns", 1),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", fraction(ns, div));
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let s = fraction(rest, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

/// `n / div` with the fraction's trailing zeros trimmed (`1.5`, `2`).
fn fraction(n: u64, div: u64) -> String {
    let (whole, frac) = (n / div, n % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// `Quantity` (`string` = 1).
pub(super) fn quantity(b: &[u8], path: &str) -> Result<Value, ProtobufError> {
    let fs = fields(b, path)?;
    Ok(json!(text(bytes(&fs, 1).unwrap_or_default(), path)?))
}

/// `IntOrString` (`type` = 1: 0 int, 1 string; `intVal` = 2; `strVal` = 3).
pub(super) fn int_or_string(b: &[u8], path: &str) -> Result<Value, ProtobufError> {
    let fs = fields(b, path)?;
    Ok(if varint(&fs, 1) == 1 {
        json!(text(bytes(&fs, 3).unwrap_or_default(), path)?)
    } else {
        json!(varint(&fs, 2) as i32)
    })
}

/// `RawExtension` / `FieldsV1` / `JSON` (`raw` = 1): the embedded JSON document.
pub(super) fn raw(b: &[u8], path: &str) -> Result<Value, ProtobufError> {
    let fs = fields(b, path)?;
    match bytes(&fs, 1) {
        None | Some([]) => Ok(Value::Null),
        Some(raw) => serde_json::from_slice(raw)
            .map_err(|_| malformed(path, "embedded raw object is not JSON")),
    }
}

#[cfg(test)]
mod tests {
    use super::go_duration;

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_duration(-2_000_000_000), "-2s");
    }
}
