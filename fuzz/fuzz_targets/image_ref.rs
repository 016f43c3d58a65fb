//! Image references come from users (`--image`, `shifterimg pull`) and from URLs.
//! Whatever parses must print back to a reference that parses to the same value,
//! since the plugin pins the printed form for every node.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shifter_api::{ImageRef, ImageType};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [
        ImageRef::parse(s),
        ImageRef::parse_with_default(s, ImageType::Docker),
    ] {
        let Ok(r) = parsed else { continue };
        let printed = r.to_string();
        let again = ImageRef::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} parsed, but its printed form {printed:?} does not: {e}"));
        assert_eq!(again, r, "{s:?} -> {printed:?} changed meaning");
        let _ = r.url_path();
    }
});
