//! `shifter.toml` is root-owned, but a parser that panics on odd text turns a typo
//! into a crashed slurmstepd callback; it must return an error instead.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = runtime_core::Config::parse(s, Path::new("fuzz.toml"));
});
