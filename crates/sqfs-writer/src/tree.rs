//! The image's directory tree, kept in memory until the tables are laid out.
//!
//! Nodes are inodes: a hardlink is a second directory entry naming the same node.

use std::collections::BTreeMap;

use crate::{Error, Meta, PathBytes};

pub(crate) type NodeId = u32;

pub(crate) const ROOT: NodeId = 0;

/// Where a file's data went: consecutive data blocks (pipeline job numbers) and an
/// optional tail in a fragment block.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileData {
    pub size: u64,
    pub first_job: u64,
    pub blocks: u32,
    pub fragment: Option<FragRef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragRef {
    pub index: u32,
    pub offset: u32,
}

#[derive(Debug)]
pub(crate) struct Dir {
    pub children: BTreeMap<Box<[u8]>, NodeId>,
    pub parent: NodeId,
    /// False while the directory only exists because something was added below it.
    pub explicit: bool,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Dir(Dir),
    File { data: FileData, nlink: u32 },
    Symlink(Box<[u8]>),
}

#[derive(Debug)]
pub(crate) struct Node {
    pub meta: Meta,
    pub kind: Kind,
}

/// Metadata of directories nobody described: root-owned, 0755, time 0.
const IMPLICIT_DIR: Meta = Meta {
    uid: 0,
    gid: 0,
    mode: 0o755,
    mtime: 0,
};

#[derive(Debug)]
pub(crate) struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    pub fn new() -> Self {
        Tree {
            nodes: vec![Node {
                meta: IMPLICIT_DIR,
                kind: Kind::Dir(Dir {
                    children: BTreeMap::new(),
                    parent: ROOT,
                    explicit: false,
                }),
            }],
        }
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize]
    }

    /// Adds `node` at `comps`, creating missing parents. A directory may take the place
    /// of an implicit one, which then gets the real metadata.
    pub fn insert(&mut self, path: &[u8], comps: &[&[u8]], node: Node) -> Result<NodeId, Error> {
        let Some((name, parents)) = comps.split_last() else {
            return self.describe_dir(ROOT, path, node);
        };
        let parent = self.make_parents(parents)?;
        match self.child(parent, name) {
            Some(existing) => self.describe_dir(existing, path, node),
            None => {
                let id = self.push(node)?;
                self.link(parent, name, id);
                Ok(id)
            }
        }
    }

    /// Adds a second name for the regular file at `target`.
    pub fn hardlink(
        &mut self,
        path: &[u8],
        comps: &[&[u8]],
        target: &[u8],
        target_comps: &[&[u8]],
    ) -> Result<(), Error> {
        let bad = |why| Error::BadHardlink {
            path: PathBytes::from(path),
            target: PathBytes::from(target),
            why,
        };
        let id = self
            .lookup(target_comps)
            .ok_or_else(|| bad("the target was not added"))?;
        if !matches!(self.nodes[id as usize].kind, Kind::File { .. }) {
            return Err(bad("the target is not a regular file"));
        }
        let Some((name, parents)) = comps.split_last() else {
            return Err(Error::Duplicate {
                path: PathBytes::from(path),
            });
        };
        let parent = self.make_parents(parents)?;
        if let Some(existing) = self.child(parent, name) {
            return Err(self.occupied(existing, path));
        }
        self.link(parent, name, id);
        if let Kind::File { nlink, .. } = &mut self.nodes[id as usize].kind {
            *nlink += 1;
        }
        Ok(())
    }

    fn lookup(&self, comps: &[&[u8]]) -> Option<NodeId> {
        comps
            .iter()
            .try_fold(ROOT, |dir, name| self.child(dir, name))
    }

    fn child(&self, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        match &self.nodes[dir as usize].kind {
            Kind::Dir(d) => d.children.get(name).copied(),
            _ => None,
        }
    }

    fn make_parents(&mut self, parents: &[&[u8]]) -> Result<NodeId, Error> {
        let mut dir = ROOT;
        for (depth, name) in parents.iter().enumerate() {
            dir = match self.child(dir, name) {
                Some(id) if matches!(self.nodes[id as usize].kind, Kind::Dir(_)) => id,
                Some(_) => {
                    let prefix: Vec<u8> = parents[..=depth].join(&b'/');
                    return Err(Error::NotADirectory {
                        path: PathBytes(prefix),
                    });
                }
                None => {
                    let id = self.push(Node {
                        meta: IMPLICIT_DIR,
                        kind: Kind::Dir(Dir {
                            children: BTreeMap::new(),
                            parent: dir,
                            explicit: false,
                        }),
                    })?;
                    self.link(dir, name, id);
                    id
                }
            };
        }
        Ok(dir)
    }

    /// Gives an implicit directory its real metadata, or explains why `existing` is taken.
    fn describe_dir(&mut self, existing: NodeId, path: &[u8], node: Node) -> Result<NodeId, Error> {
        let slot = &mut self.nodes[existing as usize];
        match (&mut slot.kind, node.kind) {
            (Kind::Dir(d), Kind::Dir(_)) if !d.explicit => {
                d.explicit = true;
                slot.meta = node.meta;
                Ok(existing)
            }
            _ => Err(self.occupied(existing, path)),
        }
    }

    fn occupied(&self, existing: NodeId, path: &[u8]) -> Error {
        let path = PathBytes::from(path);
        match &self.nodes[existing as usize].kind {
            Kind::Dir(d) if !d.explicit => Error::IsADirectory { path },
            _ => Error::Duplicate { path },
        }
    }

    fn push(&mut self, node: Node) -> Result<NodeId, Error> {
        // Inode numbers are u32 and the root's parent takes count + 1.
        if self.nodes.len() >= (u32::MAX - 2) as usize {
            return Err(Error::TooLarge("more than 2^32 - 3 inodes"));
        }
        let id = self.nodes.len() as NodeId;
        self.nodes.push(node);
        Ok(id)
    }

    fn link(&mut self, dir: NodeId, name: &[u8], id: NodeId) {
        if let Kind::Dir(d) = &mut self.nodes[id as usize].kind {
            d.parent = dir;
        }
        if let Kind::Dir(d) = &mut self.nodes[dir as usize].kind {
            d.children.insert(name.into(), id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::components;

    fn meta(mode: u16) -> Meta {
        Meta {
            uid: 1,
            gid: 2,
            mode,
            mtime: 3,
        }
    }
    fn dir() -> Node {
        Node {
            meta: meta(0o700),
            kind: Kind::Dir(Dir {
                children: BTreeMap::new(),
                parent: ROOT,
                explicit: true,
            }),
        }
    }
    fn file() -> Node {
        Node {
            meta: meta(0o644),
            kind: Kind::File {
                data: FileData::default(),
                nlink: 1,
            },
        }
    }
    fn add(t: &mut Tree, p: &str, n: Node) -> Result<NodeId, Error> {
        t.insert(p.as_bytes(), &components(p.as_bytes()).unwrap(), n)
    }

    #[test]
    fn missing_parents_are_created_and_later_take_real_metadata() {
        let mut t = Tree::new();
        add(&mut t, "a/b/f", file()).unwrap();
        let a = t.lookup(&[b"a"]).unwrap();
        assert_eq!(t.nodes()[a as usize].meta, IMPLICIT_DIR);
        assert_eq!(add(&mut t, "a", dir()).unwrap(), a);
        assert_eq!(t.nodes()[a as usize].meta, meta(0o700));
        let b = t.lookup(&[b"a", b"b"]).unwrap();
        match &t.nodes()[b as usize].kind {
            Kind::Dir(d) => assert_eq!(d.parent, a),
            _ => panic!("b is not a directory"),
        }
    }

    #[test]
    fn same_path_twice_is_a_duplicate() {
        let mut t = Tree::new();
        add(&mut t, "a", dir()).unwrap();
        assert!(matches!(
            add(&mut t, "a", dir()),
            Err(Error::Duplicate { .. })
        ));
        add(&mut t, "f", file()).unwrap();
        assert!(matches!(
            add(&mut t, "f", file()),
            Err(Error::Duplicate { .. })
        ));
        assert!(matches!(
            add(&mut t, "f", dir()),
            Err(Error::Duplicate { .. })
        ));
        add(&mut t, "", dir()).unwrap();
        assert!(matches!(
            add(&mut t, "", dir()),
            Err(Error::Duplicate { .. })
        ));
    }

    #[test]
    fn file_where_an_implicit_directory_has_children_is_refused() {
        let mut t = Tree::new();
        add(&mut t, "d/x", file()).unwrap();
        assert!(matches!(
            add(&mut t, "d", file()),
            Err(Error::IsADirectory { .. })
        ));
    }

    #[test]
    fn entry_below_a_file_names_the_file() {
        let mut t = Tree::new();
        add(&mut t, "a/f", file()).unwrap();
        match add(&mut t, "a/f/g/h", file()) {
            Err(Error::NotADirectory { path }) => assert_eq!(path.0, b"a/f"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hardlink_shares_the_node_and_counts_links() {
        let mut t = Tree::new();
        let f = add(&mut t, "f", file()).unwrap();
        t.hardlink(b"d/g", &[b"d", b"g"], b"f", &[b"f"]).unwrap();
        assert_eq!(t.lookup(&[b"d", b"g"]), Some(f));
        assert!(matches!(
            t.nodes()[f as usize].kind,
            Kind::File { nlink: 2, .. }
        ));
        assert!(matches!(
            t.hardlink(b"h", &[b"h"], b"d", &[b"d"]),
            Err(Error::BadHardlink { .. })
        ));
        assert!(matches!(
            t.hardlink(b"h", &[b"h"], b"nope", &[b"nope"]),
            Err(Error::BadHardlink { .. })
        ));
        assert!(matches!(
            t.hardlink(b"f", &[b"f"], b"f", &[b"f"]),
            Err(Error::Duplicate { .. })
        ));
    }
}
