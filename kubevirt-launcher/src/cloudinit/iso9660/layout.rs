//! Where everything goes: the order of each tree's directories and the sector of every
//! extent, computed before a single byte is written.

use super::SECTOR_SIZE;
use super::directory::{PARENT_ID, Record, SELF_ID, extent_len, write_extent};
use super::encoding::Timestamp;
use super::path_table::{self, Endian, PathEntry};
use super::tree::{Flavor, NodeKind, ROOT, Tree};

/// The first sector after the system area (ECMA-119 6.2.1): the first volume descriptor.
pub const FIRST_DESCRIPTOR: u32 = 16;

/// Descriptors: primary, Joliet, terminator.
const DESCRIPTOR_COUNT: u32 = 3;

/// One tree (primary or Joliet) laid out.
#[derive(Debug, Clone)]
pub struct TreeLayout {
    /// Which tree.
    pub flavor: Flavor,
    /// Every node's identifier in this tree, indexed like the nodes.
    ids: Vec<Vec<u8>>,
    /// Each directory's children sorted by identifier, indexed like the nodes.
    sorted: Vec<Vec<usize>>,
    /// Directory nodes in breadth-first order: path table order.
    order: Vec<usize>,
    /// First sector of each directory's extent, indexed like the nodes (0 for files).
    extent: Vec<u32>,
    /// Length of each directory's extent in bytes, indexed like the nodes (0 for files).
    size: Vec<u32>,
    /// First sector of the type L path table.
    pub l_table: u32,
    /// First sector of the type M path table.
    pub m_table: u32,
}

impl TreeLayout {
    /// Orders `tree` for `flavor`; sectors are assigned by [`Layout::new`].
    fn new(tree: &Tree, flavor: Flavor) -> TreeLayout {
        let ids = tree.identifiers(flavor);
        let sorted: Vec<Vec<usize>> = (0..tree.len())
            .map(|n| {
                let mut children = tree.children(n).to_vec();
                children.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
                children
            })
            .collect();
        let mut order = vec![ROOT];
        let mut next = 0;
        while let Some(&dir) = order.get(next) {
            order.extend(sorted[dir].iter().copied().filter(|&c| tree.is_dir(c)));
            next += 1;
        }
        let mut size = vec![0u32; tree.len()];
        for &dir in &order {
            let lens = [SELF_ID.len(), PARENT_ID.len()]
                .into_iter()
                .chain(sorted[dir].iter().map(|&c| ids[c].len()));
            size[dir] = u32::try_from(extent_len(lens)).unwrap_or(u32::MAX);
        }
        TreeLayout {
            flavor,
            ids,
            sorted,
            order,
            extent: vec![0; tree.len()],
            size,
            l_table: 0,
            m_table: 0,
        }
    }

    fn path_entries(&self, tree: &Tree) -> Vec<PathEntry<'_>> {
        let mut number = vec![0u16; self.extent.len()];
        self.order
            .iter()
            .enumerate()
            .map(|(i, &dir)| {
                // At most 65535 directories: checked by `Layout::new`.
                number[dir] = u16::try_from(i + 1).unwrap_or(u16::MAX);
                PathEntry {
                    id: if dir == ROOT { SELF_ID } else { &self.ids[dir] },
                    extent: self.extent[dir],
                    parent: number[tree.node(dir).parent],
                }
            })
            .collect()
    }

    /// The path table in the given byte order.
    pub fn path_table(&self, tree: &Tree, endian: Endian) -> Vec<u8> {
        path_table::write(&self.path_entries(tree), endian)
    }

    /// Length of the path table in bytes.
    pub fn path_table_size(&self) -> usize {
        self.order
            .iter()
            .map(|&d| path_table::entry_len(if d == ROOT { 1 } else { self.ids[d].len() }))
            .sum()
    }

    /// First sector and length of the root directory.
    pub fn root(&self) -> (u32, u32) {
        (self.extent[ROOT], self.size[ROOT])
    }

    /// Each directory's first sector and extent bytes, in path table order.
    pub fn directories(
        &self,
        tree: &Tree,
        files: &[(u32, u32)],
        date: &Timestamp,
    ) -> Vec<(u32, Vec<u8>)> {
        self.order
            .iter()
            .map(|&dir| {
                let parent = tree.node(dir).parent;
                let mut records = vec![
                    Record {
                        extent: self.extent[dir],
                        size: self.size[dir],
                        dir: true,
                        id: SELF_ID,
                    },
                    Record {
                        extent: self.extent[parent],
                        size: self.size[parent],
                        dir: true,
                        id: PARENT_ID,
                    },
                ];
                for &child in &self.sorted[dir] {
                    let (extent, size, is_dir) = match tree.node(child).kind {
                        NodeKind::Dir(_) => (self.extent[child], self.size[child], true),
                        NodeKind::File(content) => (files[content].0, files[content].1, false),
                    };
                    records.push(Record {
                        extent,
                        size,
                        dir: is_dir,
                        id: &self.ids[child],
                    });
                }
                (self.extent[dir], write_extent(&records, date))
            })
            .collect()
    }
}

/// The whole image laid out.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The primary tree.
    pub primary: TreeLayout,
    /// The Joliet tree.
    pub joliet: TreeLayout,
    /// Each file's first sector and length, indexed like the caller's files.
    pub files: Vec<(u32, u32)>,
    /// Total sectors.
    pub sectors: u32,
}

/// Sectors needed for `bytes` bytes.
fn sectors(bytes: usize) -> u64 {
    bytes.div_ceil(SECTOR_SIZE) as u64
}

impl Layout {
    /// Assigns sectors: descriptors, the four path tables, the primary directories, the Joliet
    /// directories, then file contents (both trees point at the same copy). Returns `None` when
    /// the image would not fit the 32-bit sector and size fields.
    pub fn new(tree: &Tree, file_lens: &[usize]) -> Option<Layout> {
        let mut primary = TreeLayout::new(tree, Flavor::Primary);
        let mut joliet = TreeLayout::new(tree, Flavor::Joliet);
        if primary.order.len() > usize::from(u16::MAX) {
            return None;
        }
        let mut next = u64::from(FIRST_DESCRIPTOR + DESCRIPTOR_COUNT);
        for t in [&mut primary, &mut joliet] {
            let table = sectors(t.path_table_size());
            t.l_table = u32::try_from(next).ok()?;
            t.m_table = u32::try_from(next + table).ok()?;
            next += 2 * table;
        }
        for t in [&mut primary, &mut joliet] {
            for i in 0..t.order.len() {
                let dir = t.order[i];
                t.extent[dir] = u32::try_from(next).ok()?;
                next += u64::from(t.size[dir]) / SECTOR_SIZE as u64;
            }
        }
        let mut files = Vec::with_capacity(file_lens.len());
        for &len in file_lens {
            let size = u32::try_from(len).ok()?;
            if len == 0 {
                files.push((0, 0));
                continue;
            }
            files.push((u32::try_from(next).ok()?, size));
            next += sectors(len);
        }
        Some(Layout {
            primary,
            joliet,
            files,
            sectors: u32::try_from(next).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_are_assigned_in_order() {
        let tree = Tree::from_paths(["openstack/latest/meta_data.json", "readme"]).unwrap();
        let layout = Layout::new(&tree, &[3000, 0]).unwrap();
        // 16..19 descriptors; one sector per path table: 19, 20 (primary), 21, 22 (Joliet).
        assert_eq!((layout.primary.l_table, layout.primary.m_table), (19, 20));
        assert_eq!((layout.joliet.l_table, layout.joliet.m_table), (21, 22));
        // Three directories per tree, one sector each.
        assert_eq!(layout.primary.root(), (23, 2048));
        assert_eq!(layout.joliet.root(), (26, 2048));
        // The 3000-byte file takes two sectors; the empty one none.
        assert_eq!(layout.files, vec![(29, 3000), (0, 0)]);
        assert_eq!(layout.sectors, 31);
    }

    #[test]
    fn breadth_first_directory_order() {
        let tree = Tree::from_paths(["b/x/f", "a/y/f", "a/z/f"]).unwrap();
        let layout = Layout::new(&tree, &[1, 1, 1]).unwrap();
        let names: Vec<&str> = layout
            .joliet
            .order
            .iter()
            .map(|&d| tree.node(d).name.as_str())
            .collect();
        assert_eq!(names, ["", "a", "b", "y", "z", "x"]);
        let entries = layout.joliet.path_entries(&tree);
        let parents: Vec<u16> = entries.iter().map(|e| e.parent).collect();
        assert_eq!(parents, [1, 1, 1, 2, 2, 3]);
    }
}
