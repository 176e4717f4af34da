//! libFuzzer target for Kubernetes protobuf request bodies, as kubectl's typed clients send them
//! (`kubectl create deployment|job|service ...`): `k8s\0`, a `runtime.Unknown`, the object's
//! message walked by the generated tables. Any body may be refused with an error naming the
//! field; none may panic, hang or exhaust the stack, and a body that decodes gives an object
//! with the `apiVersion` and `kind` it was sent as.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-local/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run api_protobuf -- -max_total_time=60`

#![no_main]

use kubevirt_local_fuzz::protobuf::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = decode(data) {
        assert!(object.is_object(), "a decoded body is not an object: {object}");
        for field in ["apiVersion", "kind"] {
            assert!(
                object.get(field).is_some_and(|v| v.as_str().is_some_and(|s| !s.is_empty())),
                "a decoded body has no {field}: {object}"
            );
        }
        // What the server stores must serialize.
        serde_json::to_vec(&object).expect("a decoded object serializes");
    }
});
