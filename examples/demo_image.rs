//! Build the demo guest's container image: an OCI image layout holding the demo guest (a PVH ELF
//! built from kubevirt-vmm's test-guest toolkit) at `/boot/demo.elf`, tagged `demo`.
//! `examples/vmi-demo.yaml` boots it with `firmware.kernelBoot`.
//!
//! Run: `cargo run --example demo_image -- target/demo-image`

use kubevirt_vmm::acpi::RSDP_ADDR;
use kubevirt_vmm::testguest::{elf, programs};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::PathBuf;

fn digest(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/demo-image".into()),
    );
    let kernel = elf::pvh_elf(&programs::demo(RSDP_ADDR)?)?;
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        let mut h = tar::Header::new_gnu();
        h.set_size(kernel.len() as u64);
        h.set_mode(0o444);
        h.set_cksum();
        b.append_data(&mut h, "boot/demo.elf", kernel.as_slice())?;
        b.finish()?;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar_bytes)?;
    let layer = gz.finish()?;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}],
    }))?;
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for b in [&layer, &config, &manifest] {
        std::fs::write(blobs.join(&digest(b)[7..]), b)?;
    }
    std::fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(&manifest), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "demo"}}]});
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index)?)?;
    println!(
        "demo image written to {} (oci:{}:demo)",
        out.display(),
        out.display()
    );
    Ok(())
}
