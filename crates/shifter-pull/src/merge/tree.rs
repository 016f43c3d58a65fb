//! The merge proper: layers are visited newest first, so every path is decided the
//! first time it is seen; older entries that are shadowed, whited out or below an
//! opaque directory are skipped. The result is a plan naming, for every path of the
//! final tree, which tar entry supplies it.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::warn;

use super::error::MergeError;
use super::path::{ancestors, lossy, split_parent};
use super::scan::{RawEntry, RawKind};
use super::sink::Meta;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File { ordinal: u32 },
    Symlink(Vec<u8>),
    Hardlink { target: Vec<u8>, ordinal: u32 },
}

impl NodeKind {
    fn from_raw(kind: &RawKind, ordinal: u32) -> Self {
        match kind {
            RawKind::Dir => NodeKind::Dir,
            RawKind::File => NodeKind::File { ordinal },
            RawKind::Symlink(t) => NodeKind::Symlink(t.clone()),
            RawKind::Hardlink(t) => NodeKind::Hardlink {
                target: t.clone(),
                ordinal,
            },
            RawKind::Whiteout | RawKind::Opaque => unreachable!("markers never become nodes"),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            NodeKind::Dir => "directory",
            NodeKind::File { .. } => "regular file",
            NodeKind::Symlink(_) => "symlink",
            NodeKind::Hardlink { .. } => "hardlink",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    pub meta: Meta,
    /// The layer that decided this path (index into the base-first layer list).
    pub layer: usize,
    /// False for directories only known as parents of newer entries: an older
    /// layer's directory entry may still supply their metadata.
    pub explicit: bool,
}

/// The final tree: path → node, in path order (parents before children).
#[derive(Debug, Default)]
pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, Node>,
}

/// A file entry of one layer (`layer`, `ordinal`) that supplies data.
pub type Source = (usize, u32);

enum Seen {
    Visible,
    /// Hidden by a newer layer; `keep` is the deepest of its parents that is not.
    Hidden {
        keep: Vec<u8>,
    },
}

/// The merge state between layers, fed newest layer first, entry by entry, so the
/// data pass can run in the same read as the index.
pub struct Merger<'a> {
    names: &'a [String],
    tree: Tree,
    /// Paths whited out by the layers merged so far (hidden in older layers, with all below).
    whited: HashSet<Vec<u8>>,
    /// Directories made opaque by the layers merged so far.
    opaque: HashSet<Vec<u8>>,
    /// Paths where the current layer put a non-directory that a newer directory
    /// shadows: opaque for the layers below, once this layer is done.
    replaced: Vec<Vec<u8>>,
}

/// What became of one entry.
#[derive(Debug)]
pub enum Placement {
    /// Hidden, shadowed or a marker: the entry is not a node of the tree (now).
    Skipped,
    /// The entry is the node at its path; `replaced` is the node an earlier entry of
    /// the same layer had put there.
    Placed { replaced: Option<Node> },
}

/// Merges scanned layers (base first) into the final tree.
pub fn merge_tree(names: &[String], layers: &[Vec<RawEntry>]) -> Result<Tree, MergeError> {
    let mut m = Merger::new(names);
    for (l, entries) in layers.iter().enumerate().rev() {
        for e in entries {
            m.add(e, l)?;
        }
        m.end_layer(entries);
    }
    Ok(m.into_tree())
}

impl<'a> Merger<'a> {
    pub fn new(names: &'a [String]) -> Self {
        Merger {
            names,
            tree: Tree::default(),
            whited: HashSet::new(),
            opaque: HashSet::new(),
            replaced: Vec::new(),
        }
    }

    pub fn into_tree(self) -> Tree {
        self.tree
    }

    /// Takes the next entry of layer `l`; layers come newest first and every entry of
    /// a layer before [`Merger::end_layer`].
    pub fn add(&mut self, e: &RawEntry, l: usize) -> Result<Placement, MergeError> {
        match e.kind {
            RawKind::Whiteout => Ok(Placement::Skipped),
            RawKind::Opaque => {
                // The marker says its directory exists in this layer.
                match self.seen(&e.path, l)? {
                    Seen::Visible => self.ensure_dir(&e.path, l),
                    Seen::Hidden { keep } => self.keep_dir(&keep, l),
                }
                Ok(Placement::Skipped)
            }
            _ => self.apply(e, l),
        }
    }

    /// Ends a layer: its whiteouts and opaque markers apply to the layers below only.
    pub fn end_layer(&mut self, entries: &[RawEntry]) {
        for p in std::mem::take(&mut self.replaced) {
            self.opaque.insert(p);
        }
        for e in entries {
            match e.kind {
                RawKind::Whiteout => {
                    self.whited.insert(e.path.clone());
                }
                RawKind::Opaque => {
                    self.opaque.insert(e.path.clone());
                }
                _ => {}
            }
        }
    }
}

impl Merger<'_> {
    /// Whether a newer layer hides `path`; an error when `path` lies below a
    /// non-directory laid down earlier in the same layer.
    fn seen(&self, path: &[u8], layer: usize) -> Result<Seen, MergeError> {
        let parent = |p: &[u8]| split_parent(p).0.to_vec();
        if !path.is_empty() && self.opaque.contains(&b""[..]) {
            return Ok(Seen::Hidden { keep: Vec::new() });
        }
        for anc in ancestors(path) {
            if self.whited.contains(anc) {
                return Ok(Seen::Hidden { keep: parent(anc) });
            }
            if self.opaque.contains(anc) {
                return Ok(Seen::Hidden { keep: anc.to_vec() });
            }
            if let Some(n) = self.tree.nodes.get(anc) {
                if n.kind != NodeKind::Dir {
                    if n.layer == layer {
                        return Err(self.traversal(layer, path, anc, &n.kind));
                    }
                    return Ok(Seen::Hidden { keep: parent(anc) });
                }
            }
        }
        if self.whited.contains(path) {
            return Ok(Seen::Hidden { keep: parent(path) });
        }
        Ok(Seen::Visible)
    }

    fn traversal(&self, layer: usize, path: &[u8], through: &[u8], kind: &NodeKind) -> MergeError {
        MergeError::Traversal {
            layer: self.names[layer].clone(),
            path: lossy(path),
            through: lossy(through),
            kind: kind.describe(),
        }
    }

    fn has_descendants(&self, path: &[u8]) -> Option<Vec<u8>> {
        let mut prefix = path.to_vec();
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        self.tree
            .nodes
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .find(|k| k.as_slice() != path)
            .filter(|k| k.starts_with(&prefix))
            .cloned()
    }

    /// A hidden entry still made its parent directories when its layer was applied:
    /// those above the whiteout (or opaque directory) that hides it survive.
    fn keep_dir(&mut self, keep: &[u8], layer: usize) {
        if !keep.is_empty() {
            self.ensure_dir(keep, layer);
        }
    }

    /// Makes `path` and its parents exist as directories known only implicitly.
    fn ensure_dir(&mut self, path: &[u8], layer: usize) {
        for p in ancestors(path).chain(std::iter::once(path)) {
            self.tree.nodes.entry(p.to_vec()).or_insert(Node {
                kind: NodeKind::Dir,
                meta: Meta::IMPLICIT_DIR,
                layer,
                explicit: false,
            });
        }
    }

    fn apply(&mut self, e: &RawEntry, layer: usize) -> Result<Placement, MergeError> {
        if let Seen::Hidden { keep } = self.seen(&e.path, layer)? {
            self.keep_dir(&keep, layer);
            return Ok(Placement::Skipped);
        }
        let kind = NodeKind::from_raw(&e.kind, e.ordinal);
        let is_dir = kind == NodeKind::Dir;
        let Some(existing) = self.tree.nodes.get(&e.path) else {
            if let Some(parent) = ancestors(&e.path).last() {
                let parent = parent.to_vec();
                self.ensure_dir(&parent, layer);
            }
            self.tree.nodes.insert(
                e.path.clone(),
                Node {
                    kind,
                    meta: e.meta,
                    layer,
                    explicit: true,
                },
            );
            return Ok(Placement::Placed { replaced: None });
        };
        if existing.layer != layer && existing.explicit {
            // A newer layer decided this path already. A non-directory here still
            // replaced whatever directory the layers below had: a newer directory
            // at the same path starts empty.
            if existing.kind == NodeKind::Dir && !is_dir {
                self.replaced.push(e.path.clone());
            }
            return Ok(Placement::Skipped);
        }
        if existing.kind == NodeKind::Dir && !is_dir {
            if let Some(child) = self.has_descendants(&e.path) {
                if existing.layer == layer && existing.explicit {
                    return Err(MergeError::Conflict {
                        layer: self.names[layer].clone(),
                        path: lossy(&e.path),
                        kind: kind.describe(),
                    });
                }
                return Err(self.traversal(existing.layer, &child, &e.path, &kind));
            }
            if existing.layer != layer {
                // An empty directory implied by a newer layer's opaque marker wins.
                self.replaced.push(e.path.clone());
                return Ok(Placement::Skipped);
            }
        }
        if existing.kind != NodeKind::Dir && is_dir && existing.layer == layer {
            // A file then a directory in one layer: the file already replaced
            // what the layers below had there.
            self.replaced.push(e.path.clone());
        }
        // Same layer: the later tar entry wins. An older layer's directory entry
        // supplies the metadata of a directory newer layers only implied.
        let previous = self.tree.nodes.insert(
            e.path.clone(),
            Node {
                kind,
                meta: e.meta,
                layer,
                explicit: true,
            },
        );
        Ok(Placement::Placed {
            replaced: previous.filter(|p| p.layer == layer && p.explicit),
        })
    }
}

/// Finds the file entry a hardlink of layer `layer` (tar position `ordinal`) refers
/// to, as the tree was when that layer was applied: earlier in the same layer, or in
/// an older layer not hidden by a whiteout in between. Follows links to links.
pub fn resolve_link(
    layers: &[Vec<RawEntry>],
    index: &mut LayerIndex,
    target: &[u8],
    layer: usize,
    ordinal: u32,
) -> Option<Source> {
    let mut target = target.to_vec();
    let mut layer = layer;
    let mut bound = Some(ordinal);
    // Tar writers link to the first name archived, so chains are short; the cap
    // only stops a hostile cycle.
    'hops: for _ in 0..32 {
        for m in (0..=layer).rev() {
            let map = index.get(layers, m);
            let b = if m == layer { bound } else { None };
            if let Some(idxs) = map.get(target.as_slice()) {
                let found = idxs.iter().rev().map(|&i| &layers[m][i]).find(|e| {
                    b.is_none_or(|b| e.ordinal < b)
                        && !matches!(e.kind, RawKind::Whiteout | RawKind::Opaque)
                });
                if let Some(e) = found {
                    match &e.kind {
                        RawKind::File => return Some((m, e.ordinal)),
                        RawKind::Hardlink(t) => {
                            target = t.clone();
                            layer = m;
                            bound = Some(e.ordinal);
                            continue 'hops;
                        }
                        _ => return None,
                    }
                }
            }
            // Not in this layer: does this layer hide it from the ones below?
            // A whiteout of the target or a parent, an opaque parent, or a parent
            // replaced by a non-directory (before the link, in its own layer).
            let hides = |p: &[u8], is_parent: bool| {
                map.get(p).is_some_and(|idxs| {
                    idxs.iter().any(|&i| {
                        let e = &layers[m][i];
                        match e.kind {
                            RawKind::Whiteout => true,
                            RawKind::Opaque => is_parent,
                            RawKind::Dir => false,
                            _ => is_parent && b.is_none_or(|b| e.ordinal < b),
                        }
                    })
                })
            };
            if hides(&target, false)
                || hides(b"", true)
                || ancestors(&target).any(|a| hides(a, true))
            {
                return None;
            }
        }
        return None;
    }
    warn!(target = %lossy(&target), "hardlink chain too long");
    None
}

/// Per-layer path → entry positions, built only for layers a hardlink search visits.
#[derive(Debug, Default)]
pub struct LayerIndex {
    maps: HashMap<usize, HashMap<Vec<u8>, Vec<usize>>>,
}

impl LayerIndex {
    fn get(&mut self, layers: &[Vec<RawEntry>], m: usize) -> &HashMap<Vec<u8>, Vec<usize>> {
        self.maps.entry(m).or_insert_with(|| {
            let mut map: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
            for (i, e) in layers[m].iter().enumerate() {
                map.entry(e.path.clone()).or_default().push(i);
            }
            map
        })
    }
}
