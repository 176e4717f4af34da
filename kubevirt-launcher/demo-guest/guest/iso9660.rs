//! Reading files off an ISO 9660 image (the cloud-init disks), Joliet names preferred.

use crate::virtio::blk::Disk;

/// Logical block size.
pub const BLOCK: usize = 2048;
const FIRST_DESCRIPTOR: u64 = 16;
const JOLIET_ESCAPES: [&[u8]; 3] = [b"%/@", b"%/C", b"%/E"];

/// A file or directory: first block and length.
#[derive(Clone, Copy)]
pub struct Extent {
    /// First logical block.
    pub block: u32,
    /// Bytes.
    pub len: u32,
    /// A directory.
    pub dir: bool,
}

/// An ISO 9660 volume on a disk.
pub struct Volume<'d> {
    disk: &'d mut Disk,
    root: Extent,
    joliet: bool,
    /// The volume identifier, space padded.
    pub label: [u8; 32],
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn root_of(d: &[u8; BLOCK]) -> Extent {
    Extent {
        block: le32(d, 156 + 2),
        len: le32(d, 156 + 10),
        dir: true,
    }
}

/// Compares a directory record's name with an ASCII path component, ignoring case, the
/// `;1` version and a trailing dot; a primary-volume name may have `_` for `-`.
fn name_matches(raw: &[u8], joliet: bool, want: &[u8]) -> bool {
    let mut name = [0u8; 128];
    let mut n = 0;
    if joliet {
        for c in raw.chunks_exact(2) {
            if n == name.len() {
                return false;
            }
            name[n] = if c[0] == 0 { c[1] } else { 0xff };
            n += 1;
        }
    } else {
        n = raw.len().min(name.len());
        name[..n].copy_from_slice(&raw[..n]);
    }
    let mut name = &name[..n];
    if let Some(p) = name.iter().position(|&b| b == b';') {
        name = &name[..p];
    }
    if let [rest @ .., b'.'] = name {
        name = rest;
    }
    let same = |a: u8, b: u8| a.eq_ignore_ascii_case(&b) || (!joliet && a == b'_' && b == b'-');
    name.len() == want.len() && name.iter().zip(want).all(|(&a, &b)| same(a, b))
}

impl<'d> Volume<'d> {
    /// The volume on `disk`, if it holds one.
    pub fn open(disk: &'d mut Disk) -> Option<Volume<'d>> {
        let mut b = [0u8; BLOCK];
        let mut primary = None;
        let mut joliet = None;
        let mut label = [b' '; 32];
        for i in 0..16 {
            if !read_block(disk, FIRST_DESCRIPTOR + i, &mut b) || &b[1..6] != b"CD001" {
                return None;
            }
            match b[0] {
                1 => {
                    label.copy_from_slice(&b[40..72]);
                    primary = Some(root_of(&b));
                }
                2 if JOLIET_ESCAPES.contains(&&b[88..91]) => joliet = Some(root_of(&b)),
                255 => break,
                _ => {}
            }
        }
        let (root, joliet) = match (joliet, primary) {
            (Some(j), _) => (j, true),
            (None, Some(p)) => (p, false),
            _ => return None,
        };
        Some(Volume {
            disk,
            root,
            joliet,
            label,
        })
    }

    /// The label without padding.
    pub fn label(&self) -> &[u8] {
        let n = self
            .label
            .iter()
            .rposition(|&b| b != b' ')
            .map_or(0, |p| p + 1);
        &self.label[..n]
    }

    /// Looks `path` (components separated by `/`) up from the root.
    pub fn find(&mut self, path: &[u8]) -> Option<Extent> {
        let mut at = self.root;
        for part in path.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
            if !at.dir {
                return None;
            }
            at = self.lookup(at, part)?;
        }
        Some(at)
    }

    fn lookup(&mut self, dir: Extent, want: &[u8]) -> Option<Extent> {
        let mut b = [0u8; BLOCK];
        for i in 0..dir.len.div_ceil(BLOCK as u32).min(64) {
            if !read_block(self.disk, u64::from(dir.block + i), &mut b) {
                return None;
            }
            let mut p = 0;
            while p + 33 < BLOCK {
                let len = usize::from(b[p]);
                if len < 34 || p + len > BLOCK {
                    break; // records never cross a block: the rest is padding
                }
                let name_len = usize::from(b[p + 32]);
                if 33 + name_len <= len
                    && name_matches(&b[p + 33..p + 33 + name_len], self.joliet, want)
                {
                    return Some(Extent {
                        block: le32(&b, p + 2),
                        len: le32(&b, p + 10),
                        dir: b[p + 25] & 2 != 0,
                    });
                }
                p += len;
            }
        }
        None
    }

    /// Reads up to `out.len()` bytes of the file at `e`; returns how many.
    pub fn read(&mut self, e: Extent, out: &mut [u8]) -> usize {
        let want = (e.len as usize).min(out.len());
        let mut b = [0u8; BLOCK];
        let mut done = 0;
        while done < want {
            if !read_block(
                self.disk,
                u64::from(e.block) + (done / BLOCK) as u64,
                &mut b,
            ) {
                break;
            }
            let n = (want - done).min(BLOCK);
            out[done..done + n].copy_from_slice(&b[..n]);
            done += n;
        }
        done
    }
}

fn read_block(disk: &mut Disk, block: u64, out: &mut [u8; BLOCK]) -> bool {
    let sector = block * (BLOCK as u64 / 512);
    sector + 4 <= disk.sectors && disk.read(sector, out)
}
