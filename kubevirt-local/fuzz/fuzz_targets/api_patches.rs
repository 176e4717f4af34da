//! libFuzzer target for the three patch kinds a client sends (JSON merge patch, JSON patch,
//! strategic merge patch; server-side apply merges like a merge patch). The input is a patch
//! kind (first byte), then an object and a patch as JSON text separated by a NUL byte.
//!
//! Beyond "no panic, no hang":
//! - a merge patch is idempotent (RFC 7386): applying it twice gives what applying it once
//!   gave;
//! - a JSON patch is atomic: one that fails leaves the object exactly as it was (a refused
//!   request changes nothing);
//! - a strategic merge patch without `$` directives and without lists is a merge patch: both
//!   give the same object.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-local/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run api_patches -- -max_total_time=60`

#![no_main]

use kubevirt_local_fuzz::patch::{PatchType, apply};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let kind = match kind % 4 {
        0 => PatchType::Merge,
        1 => PatchType::Json,
        2 => PatchType::Strategic,
        _ => PatchType::Apply,
    };
    let Some(nul) = rest.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(doc), Ok(patch)) = (
        serde_json::from_slice::<Value>(&rest[..nul]),
        serde_json::from_slice::<Value>(&rest[nul + 1..]),
    ) else {
        return;
    };

    let mut once = doc.clone();
    let result = apply(kind, &mut once, &patch);
    match (kind, &result) {
        (PatchType::Merge | PatchType::Apply, _) => {
            let mut twice = once.clone();
            apply(kind, &mut twice, &patch).expect("a merge patch always applies");
            assert_eq!(twice, once, "a merge patch applied twice gave another object");
        }
        (PatchType::Json, Err(_)) => {
            assert_eq!(once, doc, "a JSON patch that failed changed the object");
        }
        (PatchType::Strategic, _) if !has_directive_or_list(&patch) => {
            let mut merged = doc.clone();
            apply(PatchType::Merge, &mut merged, &patch).expect("a merge patch always applies");
            assert_eq!(once, merged, "a strategic patch without lists or directives is a merge patch");
        }
        _ => {}
    }
});

/// Whether a patch holds a list or a key starting with `$` anywhere (where strategic merge
/// differs from a merge patch by design).
fn has_directive_or_list(v: &Value) -> bool {
    match v {
        Value::Array(_) => true,
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_directive_or_list(v)),
        _ => false,
    }
}
