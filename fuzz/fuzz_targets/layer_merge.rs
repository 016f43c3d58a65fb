//! Layers are the most hostile input the gateway reads. The bytes are cut into up to
//! three layers at a marker and merged with small caps into a recording sink: the
//! merger must return an error or a tree whose every path stays inside the root, and
//! its single-read merge must agree with the two-pass fallback on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shifter_pull::merge::{
    merge_layers, merge_layers_in_two_passes, Layer, MergeOptions, Recorded, RecordingSink,
};

const MARKER: &[u8] = b"--LAYER--";

fn split_layers(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() < 2 {
        match rest.windows(MARKER.len()).position(|w| w == MARKER) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + MARKER.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    let layers: Vec<Layer> = split_layers(data)
        .into_iter()
        .enumerate()
        .map(|(i, b)| Layer::from_bytes(format!("layer{i}"), b.to_vec()))
        .collect();
    let opts = MergeOptions {
        keep_setuid: data.first().is_some_and(|b| b & 1 == 1),
        max_bytes: 1 << 20,
        max_entries: 512,
    };
    let mut sink = RecordingSink::default();
    let streamed = merge_layers(&layers, &opts, &mut sink, &mut |_| {});
    let mut two = RecordingSink::default();
    let two_pass = merge_layers_in_two_passes(&layers, &opts, &mut two, &mut |_| {});
    assert_eq!(
        streamed.is_ok(),
        two_pass.is_ok(),
        "one read gave {streamed:?}, two passes {two_pass:?}"
    );
    if streamed.is_err() {
        return;
    }
    assert_eq!(sink.entries, two.entries, "one read and two passes differ");
    for (path, rec) in &sink.entries {
        assert!(!path.starts_with('/'), "absolute path {path:?} in the merged tree");
        assert!(
            !path.split('/').any(|c| c == ".." || c == "."),
            "path {path:?} escapes or is not normalised"
        );
        if let Recorded::Hardlink(target) = rec {
            let t = String::from_utf8_lossy(target);
            assert!(
                matches!(sink.entries.get(t.as_ref()), Some(Recorded::File(..))),
                "hardlink {path:?} points at {t:?}, which is not a file of the tree"
            );
        }
        if let Recorded::File(m, _) = rec {
            if !opts.keep_setuid {
                assert_eq!(m.mode & 0o6000, 0, "{path:?} kept setuid/setgid bits");
            }
        }
    }
});
