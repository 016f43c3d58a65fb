//! Layers → one tree, without unpacking anything to disk.
//!
//! Two passes per layer. The index pass decompresses every layer (in parallel, one
//! thread per core) and keeps only tar headers; the merge then walks the layers
//! newest first so every path is decided the first time it is seen. The data pass
//! decompresses again only the layers that supply file data of the final tree and
//! streams each chosen file straight into the sink. Memory holds headers, never
//! file contents; the cost is a second decompression, which is cheap next to
//! squashfs compression.

mod emit;
mod error;
mod layer;
mod path;
mod scan;
pub mod sink;
mod tree;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use emit::{DataProgress, MergeStats};
pub use error::MergeError;
pub use layer::{Budget, Layer, LayerData};
pub use path::PathProblem;
pub use scan::MergeOptions;
pub use sink::{Meta, Recorded, RecordingSink, SinkError, TreeSink};

/// Merges `layers` (base layer first) into `sink`. `progress` hears the data pass's
/// total before the first file and the bytes written so far after each file.
pub fn merge_layers(
    layers: &[Layer],
    opts: &MergeOptions,
    sink: &mut dyn TreeSink,
    progress: &mut dyn FnMut(DataProgress),
) -> Result<MergeStats, MergeError> {
    let start = std::time::Instant::now();
    let scanned = scan_all(layers, opts)?;
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let tree = tree::merge_tree(&names, &scanned)?;
    tracing::debug!(
        entries = scanned.iter().map(Vec::len).sum::<usize>(),
        paths = tree.nodes.len(),
        elapsed = ?start.elapsed(),
        "index pass and merge done"
    );
    let stats = emit::emit(layers, &scanned, &tree, sink, progress)?;
    tracing::debug!(?stats, elapsed = ?start.elapsed(), "data pass done");
    Ok(stats)
}

type ScanResult = Result<Vec<scan::RawEntry>, MergeError>;

fn scan_all(layers: &[Layer], opts: &MergeOptions) -> Result<Vec<Vec<scan::RawEntry>>, MergeError> {
    let budget = Arc::new(Budget::new(opts.max_bytes, opts.max_entries));
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(layers.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<ScanResult>>> =
        Mutex::new((0..layers.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= layers.len() {
                    break;
                }
                let r = scan::scan_layer(&layers[i], &budget, opts);
                let failed = r.is_err();
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                if failed {
                    // Stop handing out work; the first error is reported below.
                    next.store(layers.len(), Ordering::Relaxed);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(layers.len());
    let mut first_err = None;
    for r in results {
        match r {
            Some(Ok(v)) => out.push(v),
            Some(Err(e)) => {
                // A cap error is the most useful to report, whichever layer hit it.
                let is_cap = matches!(
                    e,
                    MergeError::TooLarge { .. } | MergeError::TooManyEntries { .. }
                );
                if first_err.is_none() || is_cap {
                    first_err = Some(e);
                }
            }
            None => {}
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
