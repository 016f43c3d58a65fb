//! `imagegw.toml`: odd text must give a config error, never a panic.
#![no_main]

// The gateway's own config module, compiled here alone: it uses only std, serde,
// toml, thiserror and shifter-api, and the fuzz build stays small.
#[path = "../../imagegw/src/config.rs"]
#[allow(dead_code)]
mod config;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = config::Config::parse(s);
});
