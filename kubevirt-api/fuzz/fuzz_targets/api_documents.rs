//! libFuzzer target for what a user hands the API: the input is YAML text (one or more
//! documents, JSON included), decoded strictly into KubeVirt and CDI objects by `apiVersion`
//! and `kind`, then defaulted and validated as the webhooks do, and encoded again. Any
//! document may be refused with an error; none may panic or hang, and an object that decodes
//! must survive encode → decode unchanged (no field lost, none invented).
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-api/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run api_documents -- -max_total_time=60`

#![no_main]

use kubevirt_api::codec::documents_from_yaml;
use kubevirt_api::defaults::ClusterDefaults;
use kubevirt_api::object::Object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = documents_from_yaml(text) else {
        return;
    };
    for doc in documents {
        let Ok(mut object) = Object::decode(&doc.value) else {
            continue;
        };
        round_trip(&object);
        let _ = object.validate();
        let old = object.clone();
        object.apply_defaults(&ClusterDefaults::default());
        let _ = object.validate();
        let _ = object.validate_update(&old);
        round_trip(&object);
    }
});

/// Encodes `object` and decodes the result: it must come back equal.
fn round_trip(object: &Object) {
    let encoded = object
        .encode()
        .unwrap_or_else(|e| panic!("a decoded object does not encode: {e}"));
    let back = Object::decode(&encoded)
        .unwrap_or_else(|e| panic!("an encoded object does not decode: {e}\n{encoded:#}"));
    assert_eq!(&back, object, "encode → decode changed the object:\n{encoded:#}");
}
