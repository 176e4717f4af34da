//! Property tests of the ISO 9660 writer: any set of files within ISO limits gives an image a
//! small independent reader (iso_reader/) parses back to the same files, through the Joliet tree,
//! the primary tree and both path tables.

mod iso_reader;

use std::collections::BTreeMap;

use iso_reader::read_back;
use kubevirt_launcher::cloudinit::iso9660::IsoImage;
use proptest::prelude::*;

/// Names Joliet can hold: printable ASCII and some other BMP characters, none of `*/:;?\`.
fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._~!#$%&'()+,=@^`{}\\[\\]-]{1,20}|[a-zé€Ж-]{1,64}|x{64}"
        .prop_filter("not . or ..", |n| n != "." && n != "..")
}

/// Up to 24 files up to three levels deep, with no path both a file and a directory.
fn files() -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    let path = prop::collection::vec(name(), 1..=3).prop_map(|parts| parts.join("/"));
    let data = prop::collection::vec(any::<u8>(), 0..5000);
    prop::collection::btree_map(path, data, 0..24).prop_map(|mut files| {
        let paths: Vec<String> = files.keys().cloned().collect();
        for p in &paths {
            if paths.iter().any(|q| q.starts_with(&format!("{p}/"))) {
                files.remove(p);
            }
        }
        files
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn images_read_back_to_the_same_files(files in files()) {
        let mut image = IsoImage::new("cidata");
        for (path, data) in &files {
            image = image.with_file(path.clone(), data.clone());
        }
        let bytes = image.to_bytes().expect("files within limits");
        prop_assert_eq!(read_back(&bytes), files);
    }

    #[test]
    fn file_order_does_not_change_what_readers_see(files in files()) {
        let forward = files
            .iter()
            .fold(IsoImage::new("config-2"), |img, (p, d)| img.with_file(p.clone(), d.clone()));
        let backward = files
            .iter()
            .rev()
            .fold(IsoImage::new("config-2"), |img, (p, d)| img.with_file(p.clone(), d.clone()));
        // Primary names made unique depend on insertion order, so compare what a reader sees.
        let a = forward.to_bytes().expect("valid");
        let b = backward.to_bytes().expect("valid");
        prop_assert_eq!(a.len(), b.len());
        prop_assert_eq!(read_back(&a), read_back(&b));
    }
}
