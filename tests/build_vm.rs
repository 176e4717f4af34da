//! examples/build_vm.rs builds exactly examples/vm-demo.yaml: the same JSON value once both are
//! decoded, so the short Rust expression and the YAML cannot drift apart.

#[path = "../examples/build_vm.rs"]
mod build_vm;

use kubevirt_rs::api::codec::{differences, documents_from_yaml, encode};

#[test]
fn build_vm_example_is_vm_demo_yaml() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/vm-demo.yaml"
    ))
    .expect("examples/vm-demo.yaml is readable");
    let docs = documents_from_yaml(&text).expect("vm-demo.yaml parses");
    let built = encode(&build_vm::demo_vm()).expect("the VM encodes");
    let diffs = differences(&docs[0].value, &built);
    assert!(
        diffs.is_empty(),
        "build_vm differs from vm-demo.yaml at {diffs:?}\nbuilt: {built:#}"
    );
}
