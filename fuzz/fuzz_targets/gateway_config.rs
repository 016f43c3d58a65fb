//! `imagegw.toml`: odd text must give a config error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = shifter_imagegw::config::Config::parse(s);
});
