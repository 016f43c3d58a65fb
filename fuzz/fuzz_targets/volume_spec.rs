//! `--volume` / `SHIFTER_VOLUME` text is user input parsed on the submit host and
//! again as root on every node. Whatever parses must be absolute and free of `..`,
//! and a per-node cache (`perNodeCache=size=N`) must be one mkfs.xfs can make.
#![no_main]

use std::path::Component;

use libfuzzer_sys::fuzz_target;
use runtime_core::Volume;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(vols) = Volume::parse_all(&[s]) else {
        return;
    };
    for v in &vols {
        if let Some(c) = &v.cache {
            // mkfs.xfs cannot make anything smaller; a huge size must not wrap.
            assert!(
                c.size >= runtime_core::per_node_cache::MIN_SIZE,
                "{s:?} gave a {}-byte cache",
                c.size
            );
        }
        for p in [&v.source, &v.destination] {
            assert!(p.is_absolute(), "{s:?} gave relative path {p:?}");
            assert!(
                !p.components().any(|c| matches!(c, Component::ParentDir)),
                "{s:?} gave {p:?} with '..'"
            );
        }
    }
    let mut dests: Vec<_> = vols.iter().map(|v| &v.destination).collect();
    dests.sort();
    dests.dedup();
    assert_eq!(dests.len(), vols.len(), "{s:?}: duplicate destinations accepted");
});
