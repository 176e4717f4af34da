//! A small ISO 9660 reader, independent of the writer, for the writer's property tests and its
//! fuzz target (kubevirt-launcher/fuzz, `cloudinit_iso`): it reads an image back through the
//! Joliet tree, the primary tree and both path tables, asserting on everything it checks.

use std::collections::BTreeMap;

/// ISO 9660's logical sector (and block) size.
const SECTOR_SIZE: usize = 2048;

/// Reads a both-endian u32 and checks its two halves agree.
fn both32(b: &[u8]) -> u32 {
    let le = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    assert_eq!(le, be, "both-endian halves differ");
    le
}

fn sector(img: &[u8], n: u32) -> &[u8] {
    let start = n as usize * SECTOR_SIZE;
    &img[start..start + SECTOR_SIZE]
}

/// What a volume descriptor points at.
#[derive(Debug)]
struct Descriptor {
    root_extent: u32,
    root_size: u32,
    path_table_size: u32,
    l_table: u32,
    m_table: u32,
}

fn descriptor(img: &[u8], n: u32, kind: u8) -> Descriptor {
    let s = sector(img, n);
    assert_eq!(s[0], kind);
    assert_eq!(&s[1..7], b"CD001\x01");
    assert_eq!(both32(&s[80..88]) as usize * SECTOR_SIZE, img.len());
    let root = &s[156..190];
    assert_eq!(root[0], 34);
    Descriptor {
        root_extent: both32(&root[2..10]),
        root_size: both32(&root[10..18]),
        path_table_size: both32(&s[132..140]),
        l_table: u32::from_le_bytes([s[140], s[141], s[142], s[143]]),
        m_table: u32::from_be_bytes([s[148], s[149], s[150], s[151]]),
    }
}

/// One directory record.
#[derive(Debug)]
struct Rec {
    id: Vec<u8>,
    extent: u32,
    size: u32,
    dir: bool,
}

fn records(img: &[u8], extent: u32, size: u32) -> Vec<Rec> {
    let start = extent as usize * SECTOR_SIZE;
    let bytes = &img[start..start + size as usize];
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = usize::from(bytes[at]);
        if len == 0 {
            // Padding to the end of the sector.
            at = (at / SECTOR_SIZE + 1) * SECTOR_SIZE;
            continue;
        }
        assert!(
            at % SECTOR_SIZE + len <= SECTOR_SIZE,
            "record crosses a sector"
        );
        let r = &bytes[at..at + len];
        let id_len = usize::from(r[32]);
        assert_eq!(len, 33 + id_len + (33 + id_len) % 2);
        out.push(Rec {
            id: r[33..33 + id_len].to_vec(),
            extent: both32(&r[2..10]),
            size: both32(&r[10..18]),
            dir: r[25] & 2 != 0,
        });
        at += len;
    }
    out
}

fn joliet_name(id: &[u8]) -> String {
    let units: Vec<u16> = id
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16(&units).expect("UCS-2")
}

/// Walks one tree, collecting files by path and directories by path with their extents.
struct Walker<'a> {
    img: &'a [u8],
    name: &'a dyn Fn(&[u8]) -> String,
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeMap<String, u32>,
}

impl Walker<'_> {
    fn walk(&mut self, extent: u32, size: u32, parent_extent: u32, prefix: &str) {
        self.dirs.insert(prefix.to_owned(), extent);
        let recs = records(self.img, extent, size);
        assert_eq!(
            (recs[0].id.as_slice(), recs[0].extent),
            (&[0u8][..], extent)
        );
        assert_eq!(
            (recs[1].id.as_slice(), recs[1].extent),
            (&[1u8][..], parent_extent)
        );
        for r in &recs[2..] {
            let path = format!("{prefix}{}", (self.name)(&r.id));
            if r.dir {
                self.walk(r.extent, r.size, extent, &format!("{path}/"));
            } else {
                let start = r.extent as usize * SECTOR_SIZE;
                let data = self.img[start..start + r.size as usize].to_vec();
                self.files.insert(path, data);
            }
        }
    }
}

/// Files and directories of the tree a volume descriptor points at.
fn tree(
    img: &[u8],
    d: &Descriptor,
    name: &dyn Fn(&[u8]) -> String,
) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, u32>) {
    let mut w = Walker {
        img,
        name,
        files: BTreeMap::new(),
        dirs: BTreeMap::new(),
    };
    w.walk(d.root_extent, d.root_size, d.root_extent, "");
    (w.files, w.dirs)
}

/// Parses a path table into (full directory path, extent) pairs, in table order.
fn path_table(
    img: &[u8],
    d: &Descriptor,
    big: bool,
    name: &dyn Fn(&[u8]) -> String,
) -> Vec<(String, u32)> {
    let at = (if big { d.m_table } else { d.l_table }) as usize * SECTOR_SIZE;
    let bytes = &img[at..at + d.path_table_size as usize];
    let mut out: Vec<(String, u32)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let id_len = usize::from(bytes[i]);
        let e = [bytes[i + 2], bytes[i + 3], bytes[i + 4], bytes[i + 5]];
        let p = [bytes[i + 6], bytes[i + 7]];
        let (extent, parent) = if big {
            (u32::from_be_bytes(e), u16::from_be_bytes(p))
        } else {
            (u32::from_le_bytes(e), u16::from_le_bytes(p))
        };
        let id = &bytes[i + 8..i + 8 + id_len];
        let path = if out.is_empty() {
            assert_eq!((id, parent), (&[0u8][..], 1));
            String::new()
        } else {
            let parent = usize::from(parent) - 1;
            assert!(parent < out.len(), "parent numbered after child");
            format!("{}{}/", out[parent].0, name(id))
        };
        out.push((path, extent));
        i += 8 + id_len + id_len % 2;
    }
    out
}

/// Everything the image says, read both ways.
pub fn read_back(img: &[u8]) -> BTreeMap<String, Vec<u8>> {
    assert_eq!(img.len() % SECTOR_SIZE, 0);
    assert_eq!(sector(img, 18)[0], 255);
    let primary = descriptor(img, 16, 1);
    let joliet = descriptor(img, 17, 2);
    assert_eq!(&sector(img, 17)[88..91], b"%/E");

    let (files, dirs) = tree(img, &joliet, &joliet_name);
    for big in [false, true] {
        let table = path_table(img, &joliet, big, &joliet_name);
        assert_eq!(table.len(), dirs.len());
        for (path, extent) in table {
            assert_eq!(dirs.get(&path), Some(&extent), "{path}");
        }
    }

    let ascii = |id: &[u8]| String::from_utf8(id.to_vec()).expect("d-characters");
    let (p_files, p_dirs) = tree(img, &primary, &ascii);
    for big in [false, true] {
        let table = path_table(img, &primary, big, &ascii);
        assert_eq!(table.len(), p_dirs.len());
        for (path, extent) in table {
            assert_eq!(p_dirs.get(&path), Some(&extent), "{path}");
        }
    }
    // Same contents under the folded names.
    let mut a: Vec<&Vec<u8>> = files.values().collect();
    let mut b: Vec<&Vec<u8>> = p_files.values().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert_eq!(dirs.len(), p_dirs.len());
    files
}
