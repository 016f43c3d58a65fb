//! The one-read merge: layers newest first, each read once. Whether a path survives
//! is known when its entry is read (newer layers are done), so a surviving file's
//! data goes straight to the sink. The one thing a single read cannot know is a
//! later entry of the same layer at the same path; if one replaces a file already
//! written, the merge stops and the caller starts over in two passes.

use std::ops::ControlFlow;
use std::sync::Arc;

use super::emit::{self, MergeStats, Written};
use super::error::MergeError;
use super::layer::{Budget, Layer};
use super::path::lossy;
use super::progress::Reporter;
use super::scan::{scan_layer, MergeOptions, RawKind};
use super::sink::TreeSink;
use super::tree::{Merger, NodeKind, Placement};

pub enum Streamed {
    Done(MergeStats),
    /// `path` of layer `layer` occurs twice and its first file is already written.
    StartOver {
        layer: String,
        path: String,
    },
}

pub fn merge_streaming(
    layers: &[Layer],
    opts: &MergeOptions,
    sink: &mut dyn TreeSink,
    progress: &mut Reporter<'_>,
) -> Result<Streamed, MergeError> {
    let budget = Arc::new(Budget::new(opts.max_bytes, opts.max_entries));
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let mut merger = Merger::new(&names);
    let mut scanned = vec![Vec::new(); layers.len()];
    let mut written = Written::default();
    let counter = progress.counter();
    for l in (0..layers.len()).rev() {
        let mut twice = None;
        let entries = scan_layer(
            &layers[l],
            &budget,
            Some(counter.clone()),
            opts,
            &mut |e, data| {
                let placed = merger.add(e, l)?;
                match placed {
                    Placement::Placed {
                        replaced: Some(prev),
                    } if matches!(prev.kind, NodeKind::File { .. }) => {
                        twice = Some(e.path.clone());
                        return Ok(ControlFlow::Break(()));
                    }
                    Placement::Placed { .. } if e.kind == RawKind::File => {
                        let n = sink.add_file(&e.path, e.meta, data).map_err(|source| {
                            MergeError::Sink {
                                path: lossy(&e.path),
                                source,
                            }
                        })?;
                        written.files.insert((l, e.ordinal), e.path.clone());
                        written.stats.files += 1;
                        written.stats.file_bytes += n;
                    }
                    _ => {}
                }
                progress.tick();
                Ok(ControlFlow::Continue(()))
            },
        )?;
        if let Some(path) = twice {
            return Ok(Streamed::StartOver {
                layer: layers[l].name.clone(),
                path: lossy(&path),
            });
        }
        merger.end_layer(&entries);
        scanned[l] = entries;
    }
    let tree = merger.into_tree();
    written.stats.passes = 1;
    let stats = emit::emit(layers, &scanned, &tree, sink, written, progress)?;
    Ok(Streamed::Done(stats))
}
