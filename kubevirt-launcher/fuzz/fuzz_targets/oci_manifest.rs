//! libFuzzer target for what a registry (or an image layout) answers and a user writes: image
//! manifests and indexes, image references and the registry's `WWW-Authenticate` challenge.
//! The input is one text, tried as each.
//!
//! Beyond "no panic, no hang": every digest a manifest or index yields is a `sha256:<64 hex>`
//! digest, the only kind the launcher's store keeps and verifies blobs by (it found manifests
//! yielding `sha255:…` layers, which then failed as "corrupt downloads"), and a reference that
//! parses prints a reference that parses back to the same one.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-launcher/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run oci_manifest -- -max_total_time=60`

#![no_main]

use kubevirt_oci::{ImageRef, Parsed, digest_hex, manifest, parse_challenge};
use libfuzzer_sys::fuzz_target;

/// Blobs are stored and verified as `sha256:<64 hex>` (`digest_hex`): a manifest must yield
/// nothing else.
fn well_formed(digest: &str) {
    assert!(
        digest_hex(digest).is_some(),
        "a manifest yielded the digest {digest:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    match manifest::parse(data) {
        Ok(Parsed::Image(m)) => m.layers.iter().for_each(|d| well_formed(d)),
        Ok(Parsed::Index(d)) => well_formed(&d),
        Err(_) => {}
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_challenge(text);
    if let Ok(reference) = text.parse::<ImageRef>() {
        let printed = reference.to_string();
        let back: ImageRef = printed
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} printed as {printed:?}, which does not parse: {e}"));
        assert_eq!(back, reference, "{text:?} → {printed:?} is another reference");
    }
});
