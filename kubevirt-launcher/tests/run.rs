//! `kubevirt-launcher run` end to end: a VMI whose kernelBoot image is a local OCI layout holding a
//! PVH test guest boots on kubevirt-vmm with a cloud-init disk and an emptyDisk attached through
//! virtio-blk, powers off through ACPI, and the launcher reports Succeeded; an unsupported spec is
//! refused with its paths and exit code 2.

use kubevirt_vmm::acpi::RSDP_ADDR;
use kubevirt_vmm::testguest::{elf, programs};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn digest(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kv-run-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An OCI layout with `/boot/guest.elf`, tagged `demo`.
fn kernel_image(dir: &Path, kernel: &[u8]) {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        let mut h = tar::Header::new_gnu();
        h.set_size(kernel.len() as u64);
        h.set_mode(0o444);
        h.set_cksum();
        b.append_data(&mut h, "boot/guest.elf", kernel).unwrap();
        b.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(&layer), "size": layer.len()}]})).unwrap();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for b in [&layer, &config, &manifest] {
        std::fs::write(blobs.join(&digest(b)[7..]), b).unwrap();
    }
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest(&manifest), "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "demo"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn launcher(dir: &Path, vmi: &str) -> std::process::Output {
    let file = dir.join("vmi.yaml");
    std::fs::write(&file, vmi).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kubevirt-launcher"))
        .args(["run", "--quiet", "--vmi", file.to_str().unwrap()])
        .args([
            "--run-dir",
            dir.join("run").to_str().unwrap(),
            "--cache-dir",
            dir.join("cache").to_str().unwrap(),
        ])
        .args(["--volumes-dir", dir.join("volumes").to_str().unwrap()])
        .output()
        .expect("run kubevirt-launcher")
}

#[test]
fn a_kernel_boot_vmi_runs_to_power_off() {
    let dir = tempdir("boot");
    let guest = elf::pvh_elf(&programs::acpi_poweroff(RSDP_ADDR).expect("guest")).expect("pvh elf");
    kernel_image(&dir.join("image"), &guest);
    let vmi = format!(
        r##"
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {{name: demo, namespace: default}}
spec:
  domain:
    memory: {{guest: 64Mi}}
    firmware:
      kernelBoot: {{container: {{image: "oci:{}:demo", kernelPath: /boot/guest.elf}}}}
    devices:
      autoattachPodInterface: false
      disks:
      - {{name: scratch, disk: {{bus: virtio}}, serial: SCRATCH}}
  volumes:
  - {{name: scratch, emptyDisk: {{capacity: 8Mi}}}}
  - {{name: cloudinit, cloudInitNoCloud: {{userData: "#cloud-config\nhostname: demo\n"}}}}
"##,
        dir.join("image").display()
    );
    let out = launcher(&dir, &vmi);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "launcher failed: {err}");
    assert!(err.contains("demo Succeeded"), "{err}");
    assert!(
        !dir.join("run/ephemeral").exists(),
        "ephemeral disks are removed with the VMI"
    );
}

#[test]
fn unsupported_specs_are_refused_with_paths() {
    let dir = tempdir("refuse");
    let vmi = "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {name: x}\nspec:\n  domain:\n    memory: {guest: 64Mi}\n    devices:\n      gpus: [{name: g, deviceName: nvidia.com/x}]\n";
    let out = launcher(&dir, vmi);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.domain.devices.gpus: not supported"),
        "{err}"
    );
    assert!(err.contains("spec.domain.firmware.kernelBoot"), "{err}");
}
