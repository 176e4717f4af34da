//! libFuzzer target for the ISO 9660 writer of cloud-init disks, whose file contents (and, for
//! the config drive, file paths) come from the user's VMI. The input is a volume identifier and
//! a list of (path, content) pairs, built by `arbitrary` from the fuzzer's bytes.
//!
//! The writer may refuse an image (a name Joliet cannot hold, a path given twice, ...); an image
//! it writes must read back, through an independent reader checking both trees and all path
//! tables (`kubevirt-launcher/tests/iso_reader`), to exactly the files it was given.
//!
//! Run: `scripts/fuzz.sh`, or by hand
//! `cd kubevirt-launcher/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run cloudinit_iso -- -max_total_time=60`

#![no_main]

#[path = "../../tests/iso_reader/mod.rs"]
mod iso_reader;

use std::collections::BTreeMap;

use kubevirt_launcher_fuzz::iso9660::IsoImage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, Vec<(String, Vec<u8>)>)| {
    let (volume_id, files) = input;
    let image = files
        .iter()
        .fold(IsoImage::new(volume_id), |img, (p, d)| {
            img.with_file(p.clone(), d.clone())
        });
    let Ok(bytes) = image.to_bytes() else {
        return;
    };
    let given: BTreeMap<String, Vec<u8>> = files.into_iter().collect();
    assert_eq!(iso_reader::read_back(&bytes), given, "the image reads back to other files");
});
