//! The overlays kubevirt-vmm creates (`create_overlay`) are images QEMU accepts: `qemu-img
//! check` finds no error after guest writes, and `qemu-io` reads the base through them and the
//! written data from them; over a raw and over a qcow2 base.

mod qcow2_common;

use kubevirt_vmm::virtio::block::{CacheMode, ImageFormat, create_overlay, open_image};
use qcow2_common::{create, qemu_contents, qemu_io, run};

fn dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kv-overlay-create-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn check(base: &std::path::Path, format: ImageFormat, base_contents: Vec<u8>, d: &std::path::Path) {
    let top = d.join("top.qcow2");
    let size = base_contents.len() as u64;
    create_overlay(&top, base, format, size).unwrap();
    run("qemu-img", &["check", "-f", "qcow2", top.to_str().unwrap()]);
    {
        let mut img = open_image(&top, false, CacheMode::Writeback, &[base]).unwrap();
        img.write_at(&[0x5a; 4096], 1 << 20).unwrap();
        img.write_at(&[0xa5; 100], size - 100).unwrap();
        img.flush().unwrap();
    }
    run("qemu-img", &["check", "-f", "qcow2", top.to_str().unwrap()]);
    let mut want = base_contents;
    want[1 << 20..(1 << 20) + 4096].fill(0x5a);
    let n = want.len();
    want[n - 100..].fill(0xa5);
    assert_eq!(
        qemu_contents(&top),
        want,
        "QEMU reads base + writes through the overlay"
    );
    let out = qemu_io(&top, &[&format!("read -P 0x5a {} 4096", 1 << 20)]);
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

#[test]
fn an_overlay_over_a_raw_base_passes_qemu_img_check() {
    let d = dir("raw");
    let base = d.join("base.raw");
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&base, &data).unwrap();
    check(&base, ImageFormat::Raw, data.clone(), &d);
    assert_eq!(std::fs::read(&base).unwrap(), data, "base unchanged");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_overlay_over_a_qcow2_base_passes_qemu_img_check() {
    let d = dir("qcow2");
    let base = d.join("base.qcow2");
    create(&base, "", "4M");
    qemu_io(&base, &["write -P 0x11 0 2M"]);
    let contents = qemu_contents(&base);
    let before = std::fs::read(&base).unwrap();
    check(&base, ImageFormat::Qcow2, contents, &d);
    assert_eq!(std::fs::read(&base).unwrap(), before, "base unchanged");
    std::fs::remove_dir_all(&d).unwrap();
}
