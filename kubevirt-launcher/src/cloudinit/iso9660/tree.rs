//! The directory hierarchy built from the caller's file paths, with the names each of the two
//! trees (primary and Joliet) gives every entry.

use std::collections::BTreeSet;

use super::IsoError;
use super::encoding::{d_chars, is_ucs2, ucs2_be};

/// Joliet allows 64 UCS-2 characters per name (Joliet specification, 3.3).
pub const MAX_NAME_CHARS: usize = 64;

/// ECMA-119 6.8.2.1: at most eight directory levels, the root being the first.
pub const MAX_DIR_DEPTH: usize = 8;

/// ECMA-119 7.5.1 (level 2): a file identifier holds at most 30 characters besides `.` and `;1`.
const PRIMARY_FILE_CHARS: usize = 30;

/// ECMA-119 7.6.3 (level 2): a directory identifier holds at most 31 characters.
const PRIMARY_DIR_CHARS: usize = 31;

/// Node 0 of a [`Tree`]: the root directory.
pub const ROOT: usize = 0;

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory and its children's node indices, in insertion order.
    Dir(Vec<usize>),
    /// A file, with the index of its content among the caller's files.
    File(usize),
}

/// A file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The name as given (empty for the root).
    pub name: String,
    /// The parent's index (the root is its own parent).
    pub parent: usize,
    /// File or directory.
    pub kind: NodeKind,
}

/// Which of the two directory trees of the image a name or a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The primary volume descriptor's tree: upper-case d-character names with `;1` versions.
    Primary,
    /// The Joliet supplementary volume descriptor's tree: the names as given, in UCS-2 BE.
    Joliet,
}

/// The directory hierarchy: node 0 is the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Builds the hierarchy from `/`-separated file paths; intermediate directories are created.
    /// `paths[i]` becomes a file node pointing at content `i`.
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<Tree, IsoError> {
        let mut tree = Tree {
            nodes: vec![Node {
                name: String::new(),
                parent: ROOT,
                kind: NodeKind::Dir(Vec::new()),
            }],
        };
        for (index, path) in paths.into_iter().enumerate() {
            tree.insert(path, index)?;
        }
        Ok(tree)
    }

    fn insert(&mut self, path: &str, content: usize) -> Result<(), IsoError> {
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts {
            check_name(path, part)?;
        }
        // The file's directory is at level `parts.len()` (root = 1).
        if parts.len() > MAX_DIR_DEPTH {
            return Err(IsoError::TooDeep {
                path: path.to_owned(),
            });
        }
        let (file, dirs) = parts.split_last().ok_or_else(|| IsoError::InvalidName {
            path: path.to_owned(),
            reason: "empty path",
        })?;
        let mut dir = ROOT;
        for part in dirs {
            dir = match self.child(dir, part) {
                Some(existing) if matches!(self.nodes[existing].kind, NodeKind::Dir(_)) => existing,
                Some(_) => {
                    return Err(IsoError::Conflict {
                        path: path.to_owned(),
                    });
                }
                None => self.push(dir, part, NodeKind::Dir(Vec::new())),
            };
        }
        if self.child(dir, file).is_some() {
            return Err(IsoError::Conflict {
                path: path.to_owned(),
            });
        }
        self.push(dir, file, NodeKind::File(content));
        Ok(())
    }

    fn child(&self, dir: usize, name: &str) -> Option<usize> {
        self.children(dir)
            .iter()
            .copied()
            .find(|&c| self.nodes[c].name == name)
    }

    fn push(&mut self, parent: usize, name: &str, kind: NodeKind) -> usize {
        let index = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_owned(),
            parent,
            kind,
        });
        if let NodeKind::Dir(children) = &mut self.nodes[parent].kind {
            children.push(index);
        }
        index
    }

    /// The node at `index`.
    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index]
    }

    /// How many nodes there are (root included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// A directory's children (empty for a file).
    pub fn children(&self, index: usize) -> &[usize] {
        match &self.nodes[index].kind {
            NodeKind::Dir(children) => children,
            NodeKind::File(_) => &[],
        }
    }

    /// Whether the node is a directory.
    pub fn is_dir(&self, index: usize) -> bool {
        matches!(self.nodes[index].kind, NodeKind::Dir(_))
    }

    /// The identifier of every node in the `flavor` tree, indexed like the nodes (the root's is
    /// empty). Primary names are made unique within their directory.
    pub fn identifiers(&self, flavor: Flavor) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for node in &self.nodes {
            if let NodeKind::Dir(children) = &node.kind {
                let mut taken = BTreeSet::new();
                for &child in children {
                    out[child] = match flavor {
                        Flavor::Joliet => ucs2_be(&self.nodes[child].name),
                        Flavor::Primary => self.primary_name(child, &mut taken),
                    };
                }
            }
        }
        out
    }

    /// The level-2 identifier of a node: `NAME.EXT;1` for files, `NAME` for directories, with a
    /// `_N` suffix when folding made two names in one directory equal.
    fn primary_name(&self, index: usize, taken: &mut BTreeSet<String>) -> Vec<u8> {
        let node = &self.nodes[index];
        let dir = self.is_dir(index);
        let (stem, ext) = if dir {
            (d_chars(&node.name, PRIMARY_DIR_CHARS), String::new())
        } else {
            match node.name.rsplit_once('.') {
                Some((stem, ext)) => {
                    let ext = d_chars(ext, 8);
                    (d_chars(stem, PRIMARY_FILE_CHARS - ext.len()), ext)
                }
                None => (d_chars(&node.name, PRIMARY_FILE_CHARS), String::new()),
            }
        };
        let room = if dir {
            PRIMARY_DIR_CHARS
        } else {
            PRIMARY_FILE_CHARS
        } - ext.len();
        let base = stem;
        let mut stem = base.clone();
        let mut attempt = 0usize;
        while !taken.insert(format!("{stem}.{ext}")) {
            attempt += 1;
            let suffix = format!("_{attempt}");
            let keep: String = base
                .chars()
                .take(room.saturating_sub(suffix.len()))
                .collect();
            stem = format!("{keep}{suffix}");
        }
        if dir {
            stem.into_bytes()
        } else {
            format!("{stem}.{ext};1").into_bytes()
        }
    }
}

/// Rejects names Joliet cannot hold or that would make a path ambiguous.
fn check_name(path: &str, name: &str) -> Result<(), IsoError> {
    let reason = if name.is_empty() {
        "empty path component"
    } else if name == "." || name == ".." {
        "`.` and `..` are not names"
    } else if !is_ucs2(name) {
        "characters outside the Basic Multilingual Plane have no UCS-2 form"
    } else if name.encode_utf16().count() > MAX_NAME_CHARS {
        "longer than 64 characters"
    } else if name
        .chars()
        .any(|c| c < ' ' || matches!(c, '*' | '/' | ':' | ';' | '?' | '\\'))
    {
        "control characters and * / : ; ? \\ are not allowed"
    } else {
        return Ok(());
    };
    Err(IsoError::InvalidName {
        path: path.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tree: &Tree, flavor: Flavor) -> Vec<String> {
        tree.identifiers(flavor)
            .into_iter()
            .map(|b| match flavor {
                Flavor::Primary => String::from_utf8(b).unwrap(),
                Flavor::Joliet => {
                    let units: Vec<u16> = b
                        .chunks_exact(2)
                        .map(|p| u16::from_be_bytes([p[0], p[1]]))
                        .collect();
                    String::from_utf16(&units).unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn builds_intermediate_directories() {
        let tree = Tree::from_paths([
            "openstack/latest/meta_data.json",
            "openstack/latest/user_data",
        ])
        .unwrap();
        assert_eq!(tree.len(), 5);
        assert!(tree.is_dir(1) && tree.is_dir(2));
        assert_eq!(tree.children(2), &[3, 4]);
        assert_eq!(
            names(&tree, Flavor::Joliet),
            ["", "openstack", "latest", "meta_data.json", "user_data"]
        );
        assert_eq!(
            names(&tree, Flavor::Primary),
            [
                "",
                "OPENSTACK",
                "LATEST",
                "META_DATA.JSON;1",
                "USER_DATA.;1"
            ]
        );
    }

    #[test]
    fn primary_names_are_made_unique() {
        let tree = Tree::from_paths(["a-b", "a_b", "A-B"]).unwrap();
        assert_eq!(
            names(&tree, Flavor::Primary),
            ["", "A_B.;1", "A_B_1.;1", "A_B_2.;1"]
        );
    }

    #[test]
    fn long_primary_names_are_cut() {
        let long = "x".repeat(64);
        let tree = Tree::from_paths([long.as_str()]).unwrap();
        assert_eq!(
            names(&tree, Flavor::Primary)[1],
            format!("{}.;1", "X".repeat(30))
        );
    }

    #[test]
    fn rejects_bad_names() {
        for bad in [
            "",
            "a//b",
            "a/",
            "../x",
            "a;1",
            "x".repeat(65).as_str(),
            "\u{1F600}",
        ] {
            assert!(
                matches!(Tree::from_paths([bad]), Err(IsoError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_duplicates_and_file_dir_clashes() {
        assert!(matches!(
            Tree::from_paths(["a", "a"]),
            Err(IsoError::Conflict { .. })
        ));
        assert!(matches!(
            Tree::from_paths(["a", "a/b"]),
            Err(IsoError::Conflict { .. })
        ));
        assert!(matches!(
            Tree::from_paths(["a/b", "a"]),
            Err(IsoError::Conflict { .. })
        ));
    }

    #[test]
    fn depth_limit() {
        assert!(Tree::from_paths(["1/2/3/4/5/6/7/f"]).is_ok());
        assert!(matches!(
            Tree::from_paths(["1/2/3/4/5/6/7/8/f"]),
            Err(IsoError::TooDeep { .. })
        ));
    }
}
