//! Layers → one tree, without unpacking anything to disk.
//!
//! One read per layer, newest first ([`stream`]): every path is decided the first
//! time it is seen, so older entries that are shadowed, whited out or below an
//! opaque directory are skipped, and a surviving file's data streams straight into
//! the sink as it is decompressed. Memory holds tar headers, never file contents.
//!
//! A layer that holds one path twice (the later entry wins) defeats a single read
//! once the first file is written; the sink then starts over and the merge runs in
//! two passes: an index pass decompressing every layer in parallel and keeping only
//! headers, then a data pass reading the surviving files again.

mod emit;
mod error;
mod layer;
mod path;
mod progress;
mod scan;
pub mod sink;
mod stream;
mod tree;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{debug, info};

pub use emit::MergeStats;
pub use error::MergeError;
pub use layer::{ArrivingBlob, BlobDelivery, Budget, Layer, LayerData};
pub use path::PathProblem;
pub use progress::DataProgress;
pub use scan::MergeOptions;
pub use sink::{Meta, Recorded, RecordingSink, SinkError, TreeSink};

use progress::Reporter;
use stream::Streamed;

/// Merges `layers` (base layer first) into `sink`. `progress` hears the layer bytes
/// to read before the first one and the bytes read so far as the merge goes.
pub fn merge_layers(
    layers: &[Layer],
    opts: &MergeOptions,
    sink: &mut dyn TreeSink,
    progress: &mut dyn FnMut(DataProgress),
) -> Result<MergeStats, MergeError> {
    let start = std::time::Instant::now();
    let stored = stored_bytes(layers)?;
    let mut reporter = Reporter::new(stored, progress);
    let stats = match stream::merge_streaming(layers, opts, sink, &mut reporter)? {
        Streamed::Done(stats) => stats,
        Streamed::StartOver { layer, path } => {
            info!(%layer, %path, "a layer holds this path twice: converting again in two passes");
            sink.restart().map_err(|source| MergeError::Sink {
                path: String::new(),
                source,
            })?;
            reporter.extend(2 * stored);
            merge_two_pass(layers, opts, sink, &mut reporter)?
        }
    };
    reporter.finish();
    debug!(?stats, elapsed = ?start.elapsed(), "layers merged");
    Ok(stats)
}

/// The two-pass fallback on its own, whatever the layers hold: differential tests
/// hold it to the same result as [`merge_layers`].
pub fn merge_layers_in_two_passes(
    layers: &[Layer],
    opts: &MergeOptions,
    sink: &mut dyn TreeSink,
    progress: &mut dyn FnMut(DataProgress),
) -> Result<MergeStats, MergeError> {
    let mut reporter = Reporter::new(2 * stored_bytes(layers)?, progress);
    let stats = merge_two_pass(layers, opts, sink, &mut reporter)?;
    reporter.finish();
    Ok(stats)
}

fn stored_bytes(layers: &[Layer]) -> Result<u64, MergeError> {
    layers.iter().try_fold(0u64, |sum, l| {
        let n = l.stored_len().map_err(|source| MergeError::Open {
            layer: l.name.clone(),
            source,
        })?;
        Ok(sum + n)
    })
}

/// The fallback: every layer's headers first (in parallel), then the data.
fn merge_two_pass(
    layers: &[Layer],
    opts: &MergeOptions,
    sink: &mut dyn TreeSink,
    progress: &mut Reporter<'_>,
) -> Result<MergeStats, MergeError> {
    let scanned = scan_all(layers, opts, progress)?;
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let tree = tree::merge_tree(&names, &scanned)?;
    let written = emit::Written {
        stats: MergeStats {
            passes: 2,
            ..MergeStats::default()
        },
        ..emit::Written::default()
    };
    emit::emit(layers, &scanned, &tree, sink, written, progress)
}

type ScanResult = Result<Vec<scan::RawEntry>, MergeError>;

fn scan_all(
    layers: &[Layer],
    opts: &MergeOptions,
    progress: &mut Reporter<'_>,
) -> Result<Vec<Vec<scan::RawEntry>>, MergeError> {
    let counter = progress.counter();
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
                let r = scan::scan_layer(
                    &layers[i],
                    &budget,
                    Some(counter.clone()),
                    opts,
                    &mut |_, _| Ok(std::ops::ControlFlow::Continue(())),
                );
                let failed = r.is_err();
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                if failed {
                    // Stop handing out work; the first error is reported below.
                    next.store(layers.len(), Ordering::Relaxed);
                }
            });
        }
    });
    progress.tick();
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
