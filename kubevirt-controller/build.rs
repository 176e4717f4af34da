//! Generates the kubelet device plugin API (proto/deviceplugin.proto) for the node agent's
//! device plugins: the server side of `DevicePlugin`, the client side of `Registration` (and
//! the other sides, which the tests use to play the kubelet).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/deviceplugin.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/deviceplugin.proto"], &["proto"])?;
    Ok(())
}
