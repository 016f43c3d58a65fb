//! The final tree to a sink. Directories and symlinks come from the index alone;
//! files the streaming pass did not write (all of them after the two-pass fallback,
//! otherwise only old content kept alive by a hardlink) are streamed from another
//! read of their layer; hardlinks come last.

use std::collections::HashMap;

use tracing::warn;

use super::error::MergeError;
use super::layer::{open_tar, read_failed, Layer, Meters};
use super::path::{lossy, normalize};
use super::progress::Reporter;
use super::scan::RawEntry;
use super::sink::{Meta, TreeSink};
use super::tree::{resolve_link, LayerIndex, NodeKind, Source, Tree};

/// What the merge produced, for logs and the gateway's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Hardlinks dropped because their target is not in the final tree.
    pub dropped_links: u64,
    pub file_bytes: u64,
    /// Reads of the layers: 1 when streamed, 2 when the image needed the fallback.
    pub passes: u8,
}

/// Files already written to the sink (by the streaming pass): their tar entry and
/// the path they were written at, and the stats so far.
#[derive(Debug, Default)]
pub struct Written {
    pub stats: MergeStats,
    pub files: HashMap<Source, Vec<u8>>,
}

struct Wanted {
    ordinal: u32,
    path: Vec<u8>,
    meta: Meta,
}

/// Hands `tree` to `sink`: everything but the files in `written`, which are in it
/// already. File data not written yet is read again from its layer.
pub fn emit(
    layers: &[Layer],
    scanned: &[Vec<RawEntry>],
    tree: &Tree,
    sink: &mut dyn TreeSink,
    written: Written,
    progress: &mut Reporter<'_>,
) -> Result<MergeStats, MergeError> {
    let Written {
        mut stats,
        files: mut file_at,
    } = written;
    let sink_err = |path: &[u8]| {
        let path = lossy(path);
        move |source| MergeError::Sink { path, source }
    };

    let root_meta = tree
        .nodes
        .get(&b""[..])
        .map_or(Meta::IMPLICIT_DIR, |n| n.meta);
    sink.add_dir(b"", root_meta).map_err(sink_err(b""))?;
    let mut wanted: Vec<Vec<Wanted>> = (0..layers.len()).map(|_| Vec::new()).collect();
    for (path, node) in tree.nodes.iter().filter(|(p, _)| !p.is_empty()) {
        match &node.kind {
            NodeKind::Dir => {
                sink.add_dir(path, node.meta).map_err(sink_err(path))?;
                stats.dirs += 1;
            }
            NodeKind::Symlink(target) => {
                sink.add_symlink(path, node.meta, target)
                    .map_err(sink_err(path))?;
                stats.symlinks += 1;
            }
            NodeKind::File { ordinal } => {
                if file_at.get(&(node.layer, *ordinal)) == Some(path) {
                    continue;
                }
                file_at.insert((node.layer, *ordinal), path.clone());
                wanted[node.layer].push(Wanted {
                    ordinal: *ordinal,
                    path: path.clone(),
                    meta: node.meta,
                });
            }
            NodeKind::Hardlink { .. } => {}
        }
    }

    // A link keeps the content its target had when the link's layer was applied.
    // If that target is still in the tree, it stays a hardlink; if a newer layer
    // replaced or whited out the target, the link becomes the file it pointed to.
    let mut links: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut index = LayerIndex::default();
    for (path, node) in &tree.nodes {
        let NodeKind::Hardlink { target, ordinal } = &node.kind else {
            continue;
        };
        match resolve_link(scanned, &mut index, target, node.layer, *ordinal) {
            Some(src) => match file_at.get(&src) {
                Some(t) => links.push((path.clone(), t.clone())),
                None => {
                    let meta = source_meta(scanned, src);
                    file_at.insert(src, path.clone());
                    wanted[src.0].push(Wanted {
                        ordinal: src.1,
                        path: path.clone(),
                        meta,
                    });
                }
            },
            None => {
                warn!(path = %lossy(path), target = %lossy(target), "dropping hardlink whose target is not a file of the image");
                stats.dropped_links += 1;
            }
        }
    }
    drop(index);

    for (l, want) in wanted.iter_mut().enumerate() {
        if want.is_empty() {
            continue;
        }
        want.sort_by_key(|w| w.ordinal);
        let corrupt = |source| read_failed(&layers[l], source);
        let meters = Meters {
            read: Some(progress.counter()),
            ..Meters::default()
        };
        let mut archive = tar::Archive::new(open_tar(&layers[l], meters)?);
        let mut next = want.iter().peekable();
        for (ordinal, entry) in archive.entries().map_err(corrupt)?.enumerate() {
            let Some(w) = next.peek() else { break };
            if ordinal as u32 != w.ordinal {
                continue;
            }
            let mut entry = entry.map_err(corrupt)?;
            let indexed = recorded(scanned, (l, w.ordinal)).map(|e| &e.path[..]);
            let same = normalize(&entry.path_bytes()).is_ok_and(|p| Some(&p[..]) == indexed);
            if !same {
                return Err(MergeError::Changed {
                    layer: layers[l].name.clone(),
                    ordinal: w.ordinal,
                });
            }
            let n = sink
                .add_file(&w.path, w.meta, &mut entry)
                .map_err(sink_err(&w.path))?;
            stats.files += 1;
            stats.file_bytes += n;
            progress.tick();
            next.next();
        }
        if let Some(w) = next.next() {
            return Err(MergeError::Changed {
                layer: layers[l].name.clone(),
                ordinal: w.ordinal,
            });
        }
    }

    for (path, target) in links {
        sink.add_hardlink(&path, &target).map_err(sink_err(&path))?;
        stats.hardlinks += 1;
    }
    Ok(stats)
}

/// The index pass's record of one tar entry. Entries are in tar order, so it is
/// found by bisection.
fn recorded(scanned: &[Vec<RawEntry>], (l, ordinal): Source) -> Option<&RawEntry> {
    let entries = &scanned[l];
    entries
        .binary_search_by_key(&ordinal, |e| e.ordinal)
        .ok()
        .map(|i| &entries[i])
}

fn source_meta(scanned: &[Vec<RawEntry>], src: Source) -> Meta {
    recorded(scanned, src).map_or(Meta::IMPLICIT_DIR, |e| e.meta)
}
